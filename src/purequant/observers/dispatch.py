"""The public statistics functions, dispatched by `spec.kind` to one rule set per kind.

The table is immutable data: kind -> `KindRules` (validate, init, observe, merge, qparams and the
statistic's type). Laws every rule set keeps (tested in property_tests/test_observer_laws.py):

* `merge(spec, init_stats(spec), s) == s == merge(spec, s, init_stats(spec))`;
* merge is associative; for all but the moving averages, observing a sequence equals merging the
  statistics of any split of it (exactly, or in qparams for "histogram", see histogram.py);
* observe never mutates its tensor or the statistics it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import torch
from attrs import frozen

from . import dyadic, histogram, minmax, perchannel, search, trivial
from .errors import ObserverConfigError, StatsTypeError, located
from .spec import ObserverSpec, QParams


@frozen
class KindRules:
    """What one observer kind does. Every callable is pure.

    Attributes:
        stats_type: the class of its statistics.
        validate: spec -> None, raising ObserverConfigError.
        init: spec -> the identity statistic.
        observe: (spec, stats, tensor, where) -> stats.
        merge: (spec, a, b, where) -> stats.
        qparams: (spec, stats, where) -> QParams.
    """

    stats_type: type
    validate: Callable[[ObserverSpec], None]
    init: Callable[[ObserverSpec], Any]
    observe: Callable[[ObserverSpec, Any, torch.Tensor, str | None], Any]
    merge: Callable[[ObserverSpec, Any, Any, str | None], Any]
    qparams: Callable[[ObserverSpec, Any, str | None], QParams]


def _dyadic_rules(validate: Callable, search_fn: Callable) -> KindRules:
    return KindRules(dyadic.DyadicHistogram, validate, dyadic.init_dyadic, dyadic.observe_dyadic,
                     dyadic.merge_dyadic, search.search_qparams(search_fn))


_NONE = (trivial.NoStats, trivial.validate_nothing, trivial.init_none, trivial.observe_none,
         trivial.merge_none, trivial.qparams_none)

RULES: MappingProxyType[str, KindRules] = MappingProxyType({
    "minmax": KindRules(minmax.RangeStats, minmax.validate_per_tensor, minmax.init_range,
                        minmax.observe_minmax, minmax.merge_minmax, minmax.qparams_range),
    "moving_average_minmax": KindRules(minmax.RangeStats, minmax.validate_moving, minmax.init_range,
                                       minmax.observe_moving, minmax.merge_moving,
                                       minmax.qparams_range),
    "per_channel_minmax": KindRules(
        perchannel.ChannelRangeStats, perchannel.validate_per_channel, perchannel.init_channels,
        perchannel.observe_channels, perchannel.merge_channels, perchannel.qparams_channels),
    "moving_average_per_channel_minmax": KindRules(
        perchannel.ChannelRangeStats, perchannel.validate_moving_per_channel,
        perchannel.init_channels, perchannel.observe_moving_channels,
        perchannel.merge_moving_channels, perchannel.qparams_channels),
    "histogram": KindRules(histogram.HistogramStats, histogram.validate_histogram,
                           histogram.init_histogram, histogram.observe_histogram,
                           histogram.merge_histogram, histogram.qparams_histogram),
    "percentile": _dyadic_rules(search.validate_percentile, search.percentile_range),
    "mse": _dyadic_rules(search.validate_mse, search.mse_range),
    "entropy": _dyadic_rules(dyadic.validate_dyadic, search.entropy_range),
    "fixed": KindRules(trivial.NoStats, trivial.validate_fixed, trivial.init_none,
                       trivial.observe_none, trivial.merge_none, trivial.qparams_fixed),
    "placeholder": KindRules(*_NONE),
    "noop": KindRules(*_NONE),
})


def rules_for(spec: ObserverSpec) -> KindRules:
    """The rule set of spec.kind. O(1)."""
    try:
        return RULES[spec.kind]
    except KeyError:
        raise ObserverConfigError(f"no statistics rules for kind {spec.kind!r}") from None


def _checked(rules: KindRules, spec: ObserverSpec, stats: Any, where: str | None) -> None:
    if not isinstance(stats, rules.stats_type):
        raise StatsTypeError(located(
            f"kind {spec.kind!r} expects {rules.stats_type.__name__} statistics, got "
            f"{type(stats).__name__}; were they made with another spec?", where))


def _validated(spec: ObserverSpec, where: str | None) -> KindRules:
    rules = rules_for(spec)
    try:
        rules.validate(spec)
    except ObserverConfigError as e:
        raise ObserverConfigError(located(f"invalid {spec.kind!r} spec: {e}", where)) from None
    return rules


def init_stats(spec: ObserverSpec, where: str | None = None) -> Any:
    """The identity statistic of spec.kind, after validating the spec.

    Reads spec. Returns an immutable value. O(1). Raises ObserverConfigError for a spec its
    kind cannot use (e.g. a per-channel qscheme on "minmax").
    """
    return _validated(spec, where).init(spec)


def observe(spec: ObserverSpec, stats: Any, tensor: torch.Tensor, where: str | None = None) -> Any:
    """`stats` updated with `tensor`; neither input is modified.

    Reads spec (kind, ch_axis, options). Returns new statistics, or `stats` itself when nothing
    changed. O(tensor.numel()) for every kind that reads the tensor. Raises NonFiniteError when
    `tensor` holds NaN/inf (`where`, e.g. the node name, leads the message), ObserverShapeError
    when it does not fit per-channel statistics. The spec is not re-validated here (hot path):
    statistics come from init_stats, which validated it.
    """
    rules = rules_for(spec)
    _checked(rules, spec, stats, where)
    return rules.observe(spec, stats, tensor, where)


def merge(spec: ObserverSpec, a: Any, b: Any, where: str | None = None) -> Any:
    """Statistics of `a`'s observations followed by `b`'s.

    Associative, with init_stats(spec) as identity on both sides. O(size of the statistics).
    Raises ObserverMergeError for two non-empty moving-average statistics (order-dependent) or
    mismatched shapes.
    """
    rules = rules_for(spec)
    _checked(rules, spec, a, where)
    _checked(rules, spec, b, where)
    return rules.merge(spec, a, b, where)


def qparams(spec: ObserverSpec, stats: Any, where: str | None = None) -> QParams:
    """Quantization parameters for `stats`, computed in float32 as torch.ao does.

    O(channels) for min/max kinds, O(replay + search) for histogram kinds. Raises
    EmptyStatsError before any observe, NonFiniteError / InvalidStatsError for corrupt statistics,
    NoQParamsError for placeholder/noop, ObserverConfigError for an invalid spec.
    """
    rules = _validated(spec, where)
    _checked(rules, spec, stats, where)
    return rules.qparams(spec, stats, where)

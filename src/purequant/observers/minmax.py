"""Per-tensor range statistics: kinds "minmax" and "moving_average_minmax".

The statistic is a pair of Python floats (float32 values), so it is hashable, picklable and
compares by value. observe is one `torch.aminmax` per tensor plus two scalar reads; everything
else is Python arithmetic on two numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from attrs import frozen

from .errors import (
    EmptyStatsError,
    InvalidStatsError,
    ObserverConfigError,
    ObserverMergeError,
    located,
)
from .formula import quant_range, scalar_range_qparams
from .spec import ObserverSpec, QParams
from .tensorutil import check_finite_floats, tensor_range

_INF = math.inf


@frozen
class RangeStats:
    """Running range of a value. The identity is (inf, -inf), as in torch.ao's buffers.

    Attributes:
        min_val: lowest value seen (or its moving average), a float32 value.
        max_val: highest value seen (or its moving average), a float32 value.
    """

    min_val: float = _INF
    max_val: float = -_INF

    @property
    def empty(self) -> bool:
        """True for the identity: nothing observed yet."""
        return self.min_val == _INF and self.max_val == -_INF


EMPTY_RANGE = RangeStats()


def validate_per_tensor(spec: ObserverSpec) -> None:
    """Raise ObserverConfigError unless `spec` is a per-tensor integer spec. O(1)."""
    if spec.per_channel:
        raise ObserverConfigError(
            f"kind {spec.kind!r} is per-tensor but qscheme is {spec.qscheme!r}; use "
            "per_tensor_affine/per_tensor_symmetric, or a per_channel kind"
        )
    quant_range(spec)


def validate_moving(spec: ObserverSpec) -> None:
    """Per-tensor checks plus averaging_constant in (0, 1]; dynamic needs a constant of 1."""
    validate_per_tensor(spec)
    check_averaging_constant(spec)


def check_averaging_constant(spec: ObserverSpec) -> None:
    """Raise ObserverConfigError for an averaging_constant outside (0, 1]. O(1)."""
    c = averaging_constant(spec)
    if not 0.0 < c <= 1.0:
        raise ObserverConfigError(f"averaging_constant must be in (0, 1], got {c}")
    if spec.is_dynamic and c != 1.0:
        raise ObserverConfigError(
            f"dynamic quantization needs averaging_constant=1 (the current batch only), got {c}"
        )


def averaging_constant(spec: ObserverSpec) -> float:
    """The moving-average weight of a new batch (torch.ao's default 0.01)."""
    return float(spec.option("averaging_constant", 0.01))


def init_range(spec: ObserverSpec) -> RangeStats:
    """The identity statistic. O(1)."""
    return EMPTY_RANGE


def observe_minmax(spec: ObserverSpec, stats: RangeStats, x: torch.Tensor, where: str | None) -> RangeStats:
    """Widen the running range by `x`'s min and max. One aminmax; O(numel).

    Returns `stats` itself when `x` is empty or inside the range (nothing changed).
    """
    if x.numel() == 0:
        return stats
    lo, hi = tensor_range(x, where)
    if lo >= stats.min_val and hi <= stats.max_val:
        return stats
    return RangeStats(min(lo, stats.min_val), max(hi, stats.max_val))


def observe_moving(spec: ObserverSpec, stats: RangeStats, x: torch.Tensor, where: str | None) -> RangeStats:
    """Move the range towards `x`'s: m + c * (m_x - m), in float32 like torch.ao. O(numel)."""
    if x.numel() == 0:
        return stats
    lo, hi = tensor_range(x, where)
    if stats.empty:
        return RangeStats(lo, hi)
    # numpy float32 scalars round after every operation, exactly as torch's 0-d float32 tensors.
    c = np.float32(averaging_constant(spec))
    lo0, hi0 = np.float32(stats.min_val), np.float32(stats.max_val)
    return RangeStats(float(lo0 + c * (np.float32(lo) - lo0)), float(hi0 + c * (np.float32(hi) - hi0)))


def merge_minmax(spec: ObserverSpec, a: RangeStats, b: RangeStats, where: str | None) -> RangeStats:
    """Union of two ranges: exact, associative, commutative, identity EMPTY_RANGE. O(1)."""
    if b.empty:
        return a
    if a.empty:
        return b
    return RangeStats(min(a.min_val, b.min_val), max(a.max_val, b.max_val))


def merge_moving(spec: ObserverSpec, a: RangeStats, b: RangeStats, where: str | None) -> RangeStats:
    """Return the non-empty side; refuse two non-empty moving averages (order-dependent). O(1)."""
    if b.empty:
        return a
    if a.empty:
        return b
    raise moving_merge_error(spec, where)


def moving_merge_error(spec: ObserverSpec, where: str | None) -> ObserverMergeError:
    """The refusal shared by both moving-average kinds."""
    return ObserverMergeError(
        located(
            f"cannot merge two non-empty {spec.kind!r} statistics: a moving average depends on "
            "the order of every batch, so shards cannot be combined. Calibrate this observer in "
            "one stream, or use the 'minmax' / 'per_channel_minmax' kind, whose merge is exact.",
            where,
        )
    )


def check_range(kind: str, lo: float, hi: float, where: str | None) -> None:
    """Raise EmptyStatsError / NonFiniteError / InvalidStatsError for an unusable range. O(1)."""
    if lo == _INF and hi == -_INF:
        raise empty_error(kind, where)
    check_finite_floats(kind, (lo, hi), where)
    if lo > hi:
        raise InvalidStatsError(located(f"{kind} statistics have min {lo} > max {hi}", where))


def empty_error(kind: str, where: str | None) -> EmptyStatsError:
    """The error for qparams of statistics that never observed a tensor."""
    return EmptyStatsError(
        located(
            f"{kind} statistics are empty: qparams were requested before any tensor was "
            "observed. Run calibration data through the model first; if this value is never "
            "computed on your data (a dead branch), exclude it from quantization.",
            where,
        )
    )


def qparams_range(spec: ObserverSpec, stats: RangeStats, where: str | None) -> QParams:
    """Scale/zero point from the running range (torch.ao's formula, float32). O(1)."""
    check_range(spec.kind, stats.min_val, stats.max_val, where)
    return scalar_range_qparams(spec, stats.min_val, stats.max_val, where)

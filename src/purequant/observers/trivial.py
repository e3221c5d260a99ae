"""Kinds without statistics: "fixed", "placeholder", "noop".

They share `NoStats`: observe returns it untouched (the tensor is not read), merge returns it.
* fixed: qparams come from options `scale` and `zero_point` (torch.ao's FixedQParamsObserver;
  quant range defaults to 0..255 as there).
* placeholder (dynamic quantization; qparams computed by the kernel at run time) and noop (a
  dtype tag such as float16): qparams raise NoQParamsError. Callers read spec.dtype /
  spec.is_dynamic for the tag; returning a fake QParams would invite using it as real.
"""

from __future__ import annotations

import torch
from attrs import frozen

from .errors import NoQParamsError, ObserverConfigError, located
from .formula import quant_range
from .spec import ObserverSpec, QParams
from .tensorutil import f32


@frozen
class NoStats:
    """The (only) statistic of the kinds that gather none."""


NO_STATS = NoStats()


def validate_fixed(spec: ObserverSpec) -> None:
    """Per-tensor, static, with numeric `scale` > 0 and integer `zero_point` inside the range."""
    if spec.per_channel or spec.is_dynamic:
        raise ObserverConfigError("kind 'fixed' is per-tensor and static")
    scale, zero_point = spec.option("scale"), spec.option("zero_point")
    if not (isinstance(scale, (int, float)) and scale > 0 and isinstance(zero_point, int)):
        raise ObserverConfigError(
            f"kind 'fixed' needs options scale > 0 and integer zero_point, got {scale!r}, "
            f"{zero_point!r}; e.g. options={{'scale': 1/256, 'zero_point': 0}}"
        )
    qmin, qmax = _fixed_range(spec)
    if not qmin <= zero_point <= qmax:
        raise ObserverConfigError(f"zero_point {zero_point} is outside [{qmin}, {qmax}]")


def _fixed_range(spec: ObserverSpec) -> tuple[int, int]:
    if spec.quant_min is not None and spec.quant_max is not None:
        return spec.quant_min, spec.quant_max
    if spec.dtype == "quint8":
        return 0, 255  # FixedQParamsObserver's defaults
    qr = quant_range(spec)
    return qr.qmin, qr.qmax


def validate_nothing(spec: ObserverSpec) -> None:
    """placeholder/noop accept any spec."""


def init_none(spec: ObserverSpec) -> NoStats:
    """The only statistic. O(1)."""
    return NO_STATS


def observe_none(spec: ObserverSpec, stats: NoStats, x: torch.Tensor, where: str | None) -> NoStats:
    """Nothing to gather: returns `stats` without reading `x`. O(1)."""
    return stats


def merge_none(spec: ObserverSpec, a: NoStats, b: NoStats, where: str | None) -> NoStats:
    """Trivially associative. O(1)."""
    return a


def qparams_fixed(spec: ObserverSpec, stats: NoStats, where: str | None) -> QParams:
    """The configured scale (rounded to float32, as torch.ao stores it) and zero point. O(1)."""
    validate_fixed(spec)
    qmin, qmax = _fixed_range(spec)
    return QParams(spec.dtype, spec.qscheme, (f32(spec.option("scale")),),
                   (spec.option("zero_point"),), qmin, qmax)


def qparams_none(spec: ObserverSpec, stats: NoStats, where: str | None) -> QParams:
    """Always raises NoQParamsError: these kinds carry a dtype tag only."""
    reason = ("qparams are computed at run time by the dynamic kernel" if spec.kind == "placeholder"
              else "it only tags the value's dtype")
    raise NoQParamsError(
        located(f"kind {spec.kind!r} (dtype {spec.dtype}) has no qparams: {reason}. Read "
                "spec.dtype / spec.is_dynamic instead of calling qparams.", where)
    )

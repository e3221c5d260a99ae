"""From a float range to qparams: the integer range of a spec and the scale/zero-point formula.

Behaviour follows torch.ao's `UniformQuantizationObserverBase` exactly (same float32 operations in
the same order, so scales agree bit for bit): affine, symmetric and
`per_channel_affine_float_qparams` schemes, custom quant_min/quant_max, reduce_range, eps clamp.
One deliberate difference: invalid configurations that torch.ao accepts at construction and turns
into garbage later raise ObserverConfigError here.
"""

from __future__ import annotations

import torch
from attrs import frozen

from .errors import ObserverConfigError, located
from .spec import ObserverSpec, QParams

# Full ranges per dtype, and the one-bit-narrower ranges reduce_range picks when no custom range
# is given. qint32 and quint4x2 ignore reduce_range, as in torch.ao.
_FULL = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-(2**31), 2**31 - 1), "quint4x2": (0, 15)}
_REDUCED = {"quint8": (0, 127), "qint8": (-64, 63)}
# Widest custom range each dtype admits (torch.ao checks qint8 and qint32 only; quint8 and
# quint4x2 are checked here too, because a wider range cannot be stored).
_MAX_LEVELS = {"quint8": 256, "qint8": 256, "qint32": 2**32, "quint4x2": 16}


@frozen
class QuantRange:
    """The integer range qparams map onto.

    Attributes:
        qmin: lowest integer.
        qmax: highest integer.
        custom: the spec gave both quant_min and quant_max (changes the symmetric quint8 zero
            point from 128 to the midpoint, as in torch.ao).
    """

    qmin: int
    qmax: int
    custom: bool


def quant_range(spec: ObserverSpec, where: str | None = None) -> QuantRange:
    """The integer range of `spec`, validated.

    Reads dtype, quant_min, quant_max, reduce_range, qscheme. Custom bounds are used as given;
    reduce_range narrows only the dtype's default range. O(1). Raises ObserverConfigError for a
    non-integer dtype, a custom range that excludes 0, is empty or too wide, and for symmetric
    quint8 with reduce_range (torch.ao refuses it: zero point 128 would leave 0..127).
    """
    if spec.dtype not in _FULL:
        raise ObserverConfigError(
            located(f"dtype {spec.dtype!r} has no integer range; use one of {sorted(_FULL)}", where)
        )
    if spec.symmetric and spec.reduce_range and spec.dtype == "quint8":
        raise ObserverConfigError(
            located("reduce_range with a symmetric quint8 scheme is unsupported (zero point 128 "
                    "would fall outside 0..127); use qint8, or quant_min/quant_max", where)
        )
    if spec.quant_min is None or spec.quant_max is None:
        table = _REDUCED if spec.reduce_range else _FULL
        qmin, qmax = table.get(spec.dtype, _FULL[spec.dtype])
        return QuantRange(qmin, qmax, False)
    qmin, qmax = spec.quant_min, spec.quant_max
    if not qmin <= 0 <= qmax or qmin >= qmax:
        raise ObserverConfigError(
            located(f"custom range [{qmin}, {qmax}] must contain 0 and have quant_min < "
                    "quant_max", where)
        )
    if qmax - qmin + 1 > _MAX_LEVELS[spec.dtype]:
        raise ObserverConfigError(
            located(f"custom range [{qmin}, {qmax}] is wider than {spec.dtype} allows "
                    f"({_MAX_LEVELS[spec.dtype]} levels)", where)
        )
    # A custom range is the effective one (ObserverSpec's contract): reduce_range only narrows the
    # dtype's default range. torch.ao's custom range + reduce_range corresponds to the halved
    # bounds (floor division), which is what from_torch_observer records.
    return QuantRange(qmin, qmax, True)


def scale_zero_point(
    spec: ObserverSpec, qr: QuantRange, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point for float32 ranges [lo, hi] (0-d for per-tensor, 1-d per channel).

    Reads spec.qscheme, spec.dtype, spec.eps. Pure, elementwise, O(channels). The caller has
    checked lo <= hi and finiteness. Zero points are int32, or float32 for
    per_channel_affine_float_qparams.
    """
    eps = torch.tensor([spec.eps], dtype=torch.float32)
    levels = float(qr.qmax - qr.qmin)
    if spec.qscheme == "per_channel_affine_float_qparams":
        # Plain min/max (zero need not be representable); tiny scales fall back to 1.
        scale = (hi - lo) / levels
        scale = torch.where(scale > eps, scale, torch.ones_like(scale))
        return scale, -1 * lo / scale
    lo_neg = torch.min(lo, torch.zeros_like(lo))
    hi_pos = torch.max(hi, torch.zeros_like(hi))
    if spec.symmetric:
        bound = torch.max(-lo_neg, hi_pos)
        scale = torch.max(bound / (levels / 2), eps)
        return scale, torch.full_like(scale, _symmetric_zero_point(spec, qr), dtype=torch.int32)
    scale = torch.max((hi_pos - lo_neg) / levels, eps)
    zero_point = qr.qmin - torch.round(lo_neg / scale).to(torch.int)
    return scale, torch.clamp(zero_point, qr.qmin, qr.qmax)


def _symmetric_zero_point(spec: ObserverSpec, qr: QuantRange) -> int:
    # Unsigned symmetric ranges centre on the midpoint; signed ones on 0.
    if spec.dtype != "quint8":
        return 0
    return (qr.qmin + qr.qmax) // 2 if qr.custom else 128


def range_qparams(
    spec: ObserverSpec, lo: torch.Tensor, hi: torch.Tensor, where: str | None = None
) -> QParams:
    """QParams for a checked float32 range: `scale_zero_point` packed as plain numbers.

    Per-tensor results get one-element tuples and axis None; per-channel ones get
    axis=spec.ch_axis. O(channels).
    """
    qr = quant_range(spec, where)
    scale, zero_point = scale_zero_point(spec, qr, lo, hi)
    zps = zero_point.reshape(-1).tolist()
    return QParams(
        dtype=spec.dtype,
        qscheme=spec.qscheme,
        scale=tuple(scale.reshape(-1).tolist()),
        zero_point=tuple(zps if zero_point.is_floating_point() else (int(z) for z in zps)),
        quant_min=qr.qmin,
        quant_max=qr.qmax,
        axis=spec.ch_axis if spec.per_channel else None,
    )


def scalar_range_qparams(spec: ObserverSpec, lo: float, hi: float, where: str | None = None) -> QParams:
    """`range_qparams` for a per-tensor range given as Python floats (float32 values). O(1)."""
    return range_qparams(
        spec, torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32), where
    )

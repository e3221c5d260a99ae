"""Small tensor helpers shared by the statistics rules: reading ranges, finiteness, equality.

Nothing here mutates a tensor it is given.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import NonFiniteError, located


def tensors_equal(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Value equality for optional tensors: same dtype, shape and elements (-0.0 == 0.0).

    Used as the attrs `eq` of tensor fields. O(numel).
    """
    if a is None or b is None:
        return a is b
    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))


def f32(value: float) -> float:
    """Round a Python float to the nearest float32, returned as a Python float. O(1)."""
    return float(np.float32(value))


def detached(x: torch.Tensor) -> torch.Tensor:
    """`x` without its autograd history; the same object when it has none. O(1)."""
    return x.detach() if x.requires_grad else x


def nonfinite_report(x: torch.Tensor) -> str:
    """Describe where `x` is not finite: counts of NaN, +inf and -inf. O(numel); error path only."""
    x = detached(x)
    nan = int(torch.isnan(x).sum())
    pos = int(torch.isposinf(x).sum())
    neg = int(torch.isneginf(x).sum())
    return f"{nan} NaN, {pos} +inf, {neg} -inf among {x.numel()} elements"


def nonfinite_input(x: torch.Tensor, where: str | None) -> NonFiniteError:
    """The error for an observed tensor holding NaN or inf. O(numel); error path only."""
    return NonFiniteError(
        located(
            f"observed tensor of shape {tuple(x.shape)} is not finite ({nonfinite_report(x)}). "
            "Quantization ranges cannot include NaN or inf: find the op producing them "
            "(overflow, log/div of zero, uninitialised buffer) or clean the calibration data.",
            where,
        )
    )


def tensor_range(x: torch.Tensor, where: str | None) -> tuple[float, float]:
    """The float32 min and max of a non-empty tensor, as Python floats.

    One `torch.aminmax` pass. Reducing first and rounding the two results to float32 equals
    rounding every element first (rounding is monotone), so float64 input needs no full copy.
    Raises NonFiniteError if `x` holds NaN or inf. O(numel).
    """
    lo_t, hi_t = torch.aminmax(detached(x))
    if lo_t.dtype != torch.float32:
        lo_t, hi_t = lo_t.float(), hi_t.float()
    lo, hi = lo_t.item(), hi_t.item()
    # aminmax propagates NaN, and an inf anywhere shows in min or max, so two scalars suffice.
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise nonfinite_input(x, where)
    return lo, hi


def check_finite_floats(what: str, values: tuple[float, ...], where: str | None) -> None:
    """Raise NonFiniteError if any of `values` (statistics) is NaN or inf. O(len(values))."""
    if not all(math.isfinite(v) for v in values):
        raise NonFiniteError(
            located(
                f"{what} statistics hold non-finite values {values}; they were not produced by "
                "observe (which rejects NaN/inf). Rebuild them with init_stats and observe.",
                where,
            )
        )

"""`torch.histc` over a known range, bit for bit, in vectorised passes instead of a scalar loop.

ATen's CPU histc (HistogramKernel.cpp, `LINEAR_INTERPOLATION`, the histc path) builds the edges
with `linspace(min, max, bins + 1)` in the input dtype, whose first and last entries are the
float32 `min` and `max` themselves, and then, per element, in float32:

    pos = int(((x - left) * bins) / (right - left));  pos == bins -> bins - 1

(three roundings, truncation towards zero), skipping NaN and values outside [left, right], and
adds 1.0 to a float32 count. That loop costs 7-8.5 ns per element on one core here. The same
three float32 operations run as whole-tensor ops (IEEE float32 arithmetic is the same whether
scalar or vectorised), the indices become int16 and `torch.bincount` counts them: 2.9-3.9 ns
per element (bench/bench_calibration.py), bincount's scalar loop being the largest part.
Where the two could differ we call `torch.histc` itself:

* left == right: histc widens the range by its own rule (`bins_edges_correction`);
* right - left, or (right - left) * bins, overflows float32 (histc's arithmetic leaves the
  finite range; the linspace edges become NaN);
* a count above 2**24: histc's float32 counters stop at 2**24, bincount's int64 ones do not.

When `bins` is a power of two and `(right - left) / bins` is exact in float32, multiplying by
`bins` and dividing by the width equals dividing by the exact step: `t * bins` is exact (no
overflow, see above) and `t * bins / w == t / (w / bins)` as real numbers, so both round alike.
That saves a pass. When `left == 0` the subtraction is the identity and is skipped too.

Precondition (the caller's, checked by `observe`): `values` is finite and within [lo, hi].
Other dtypes and devices go to `torch.histc`. property_tests/test_histc_exact.py compares the
two on adversarial values.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

# histc counts in float32: exact up to 2**24 per bin, saturating beyond.
_EXACT_COUNT = 2**24
# Below this many elements histc's scalar loop beats our fixed cost of about five torch calls.
_SMALL = 4096


@lru_cache(maxsize=512)
def plan_for(bins: int, lo: float, hi: float) -> tuple[float, float, float | None] | None:
    """(left, width, step) of histc's float32 arithmetic; step is None when not exact.

    None when histc must be called itself (see the module docstring). Cached: calibration
    folds many batches against the same few ranges.
    """
    left, right = np.float32(lo), np.float32(hi)
    with np.errstate(over="ignore", under="ignore"):
        width = right - left
        if not (left < right and math.isfinite(width) and math.isfinite(width * np.float32(bins))):
            return None
        step = width / np.float32(bins)
        exact = (bins & (bins - 1)) == 0 and step > 0 and step * np.float32(bins) == width
    return float(left), float(width), float(step) if exact else None


def bin_position(value: float, bins: int, plan: tuple[float, float, float | None]) -> int:
    """histc's bin of one float32 `value` within the plan's range: the same float32 steps. O(1)."""
    left, width, step = plan
    t = np.float32(value) - np.float32(left)
    t = t / np.float32(step) if step is not None else t * np.float32(bins) / np.float32(width)
    return min(int(t), bins - 1)


def dense_flat(x: torch.Tensor) -> torch.Tensor:
    """The elements of `x` as a 1-d tensor in memory order, without a copy when `x` is dense.

    Histograms ignore order, so a transposed or channels-last tensor need not be made
    contiguous. Falls back to `reshape(-1)` (a copy) for overlapping or gapped layouts. O(ndim).
    """
    if x.is_contiguous():
        return x.view(-1)
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(x.shape, x.stride()) if s != 1):
        if stride != expected:
            return x.reshape(-1)
        expected *= size
    return x.as_strided((x.numel(),), (1,), x.storage_offset())


def bin_indices(flat: torch.Tensor, bins: int, plan: tuple[float, float, float | None]) -> torch.Tensor:
    """histc's bin position of every element (0..bins; bins is the inclusive right edge)."""
    left, width, step = plan
    t = flat if left == 0.0 else torch.sub(flat, left)
    if step is not None:
        t = torch.div(t, step) if t is flat else t.div_(step)
    else:
        t = torch.mul(t, float(bins)) if t is flat else t.mul_(float(bins))
        t.div_(width)
    return t.to(torch.int16 if bins < 2**15 else torch.int32)


def histc(values: torch.Tensor, bins: int, lo: float, hi: float) -> torch.Tensor:
    """`torch.histc(values, bins, min=lo, max=hi)`, bit for bit: float32 counts of `bins` bins.

    `values`: float32, finite, within [lo, hi] (any shape or layout). O(numel) in three to five
    vectorised passes plus bincount's counting loop; small tensors go to histc itself, whose
    fixed cost is lower.
    """
    plan = plan_for(bins, lo, hi)
    if (plan is None or values.dtype != torch.float32 or values.numel() < _SMALL
            or values.device.type != "cpu"):
        return torch.histc(values, bins, min=lo, max=hi)
    # The few fix-ups on a bins-sized array cost ~0.1 us each in numpy against ~3-7 us as
    # torch indexing ops, which matters for the many small activations of a transformer.
    counts = torch.bincount(bin_indices(dense_flat(values), bins, plan), minlength=bins + 1).numpy()
    counts[bins - 1] += counts[bins]  # histc puts the right edge (pos == bins) in the last bin
    if values.numel() > _EXACT_COUNT and counts[:bins].max() > _EXACT_COUNT:
        return torch.histc(values, bins, min=lo, max=hi)
    return torch.from_numpy(counts[:bins].astype(np.float32))

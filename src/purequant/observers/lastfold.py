"""A one-entry memo of the last histogram fold, for observations that repeat the last one.

torch.ao shares one observer between an op's input and output when the op keeps the
quantization parameters: the observed graph then observes, under the same key and right after
the first value x, a value derived from x. Two derivations are common and let the new batch's
histogram be read off x's, with no binning pass:

* a view of x (reshape, transpose, permute: a third of the observed elements in the BERT-style
  encoder). Same elements, so the same counts over the same range. Recognised without reading
  the data: the same live storage, the same first element and element count, a dense layout,
  and an unchanged version counter (PyTorch bumps it on every in-place write through x or any
  of its views, as autograd relies on; like autograd, it cannot see writes that bypass
  PyTorch, e.g. through a numpy array sharing the memory).
* a clamp of x (ReLU, ReLU6, Hardtanh: nearly half of MobileNetV2's observed elements). If
  y == clamp(x, lo, hi) elementwise, with y's range inside the histogram's range,
  then, since histc's bin position is a non-decreasing function of the value, every bin below
  bin(lo) empties into bin(lo), every bin above bin(hi) into bin(hi), and the bins between keep
  their counts. Checked, not assumed: 8 elements in plain Python and 64 sampled ones first
  (other ops are turned away in ~10 us), then every element (a clamp and numpy's compare,
  ~1.3 ns per element against ~3.5 ns to bin). The clamp bounds come from the sample and y's
  range from x's, so y needs no min/max pass either.

The memo holds x itself (one tensor, so its storage cannot be reused under us) and the
statistics object the fold produced: it only applies to an observe on exactly that object, so
the result is the one the full computation gives, bit for bit (tests/test_histogram_memo.py
checks both paths against torch.ao). Thread-local; `forget` drops the tensor (calibration does
so after each run).
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

from .histc import bin_position, plan_for

_LOCAL = threading.local()
# Derived counts are sums of bins: exact in float32 up to 2**24, histc's own counting limit.
_EXACT_COUNT = 2**24
_SAMPLE = 64
_GLANCE = 8


class _Last:
    """The last fold: the statistics it produced, the tensor it binned and that batch's counts."""

    __slots__ = ("stats", "tensor", "version", "lo", "hi", "update", "bins")

    def __init__(self, stats: object, tensor: torch.Tensor, lo: float, hi: float,
                 update: torch.Tensor, bins: int) -> None:
        self.stats = weakref.ref(stats)
        self.tensor, self.version = tensor, tensor._version
        self.lo, self.hi, self.update, self.bins = lo, hi, update, bins


def _usable(x: torch.Tensor) -> bool:
    # Inference tensors have no version counter; other devices would need a copy to compare.
    return x.dtype == torch.float32 and x.device.type == "cpu" and not x.is_inference()


def remember(stats: object, x: torch.Tensor, lo: float, hi: float, update: torch.Tensor,
             bins: int) -> None:
    """Record that `stats` is the fold of `x` (range [lo, hi]) whose own counts are `update`."""
    _LOCAL.last = _Last(stats, x, lo, hi, update, bins) if _usable(x) else None


def forget() -> None:
    """Drop the memo and the tensor it holds."""
    _LOCAL.last = None


def _current(stats: object, x: torch.Tensor, bins: int) -> _Last | None:
    last = getattr(_LOCAL, "last", None)
    if last is None or last.stats() is not stats or last.bins != bins or not _usable(x):
        return None
    held = last.tensor
    if held._version != last.version or x.numel() != held.numel():
        return None  # x was written to since it was binned
    return last


def _dense(x: torch.Tensor) -> bool:
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(x.shape, x.stride()) if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def same_values(stats: object, x: torch.Tensor, bins: int) -> tuple[torch.Tensor, float, float] | None:
    """(counts, lo, hi) of the last fold when `x` holds exactly its elements; else None. O(ndim)."""
    last = _current(stats, x, bins)
    if last is None or x.data_ptr() != last.tensor.data_ptr() or x._version != last.version:
        return None
    if not (_dense(x) and _dense(last.tensor)):
        return None
    return last.update, last.lo, last.hi


def clamped(stats: object, x: torch.Tensor, state_lo: float, state_hi: float,
            bins: int) -> tuple[torch.Tensor, float, float] | None:
    """(counts over the state's range, lo, hi) when x == clamp(last tensor, lo, hi); else None.

    The bounds are read off a sample (where x differs from the last tensor, it holds a bound;
    where no sample is clamped, the last tensor's own extreme stands in), then every element is
    compared. x's range follows from the last tensor's, since clamp is monotone, so x needs no
    min/max pass of its own; it must lie inside the state's range (no widening). O(numel).
    """
    last = _current(stats, x, bins)
    plan = plan_for(bins, state_lo, state_hi)
    if (last is None or plan is None or x.numel() > _EXACT_COUNT or x.shape != last.tensor.shape
            or not (x.is_contiguous() and last.tensor.is_contiguous())):
        return None
    # numpy views: slicing them costs ~0.3 us against ~2 us for a torch slice.
    ys, xs = x.numpy().reshape(-1), last.tensor.numpy().reshape(-1)
    if not _clamp_like(ys[:_GLANCE].tolist(), xs[:_GLANCE].tolist()):
        return None
    step = max(1, ys.size // _SAMPLE)
    bounds = _sampled_bounds(ys[::step], xs[::step], last.lo, last.hi)
    if bounds is None:
        return None
    low, high = bounds
    lo, hi = min(max(last.lo, low), high), min(max(last.hi, low), high)
    if not (state_lo <= lo and hi <= state_hi):
        return None
    if not np.array_equal(ys, last.tensor.clamp(low, high).numpy().reshape(-1)):
        return None
    return _collapse(last.update, bin_position(lo, bins, plan), bin_position(hi, bins, plan)), lo, hi


def _clamp_like(ys: list[float], xs: list[float]) -> bool:
    """Whether ys == clamp(xs, low, high) is possible: all raised values equal, all lowered ones
    equal. In plain Python on a few elements (~3 us), it turns away other ops (a scaling, an add)
    before numpy's ~30 us sample check."""
    raised = {y for y, x in zip(ys, xs) if y > x}
    lowered = {y for y, x in zip(ys, xs) if y < x}
    return len(raised) <= 1 and len(lowered) <= 1


def _sampled_bounds(ys: np.ndarray, xs: np.ndarray, lo: float, hi: float) -> tuple[float, float] | None:
    """Clamp bounds (low, high) consistent with ys == clamp(xs, low, high), or None. O(sample)."""
    raised, lowered = ys > xs, ys < xs
    low = float(ys[raised].min()) if raised.any() else lo
    high = float(ys[lowered].max()) if lowered.any() else hi
    if not low <= high or not np.array_equal(ys, np.clip(xs, low, high)):
        return None
    return low, high


def _collapse(update: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """`update` with bins up to `first` summed into it and bins from `last` summed into it."""
    counts = update.numpy().astype(np.int64)
    out = np.zeros_like(counts)
    if first == last:
        out[first] = counts.sum()
    else:
        out[first] = counts[: first + 1].sum()
        out[first + 1 : last] = counts[first + 1 : last]
        out[last] = counts[last:].sum()
    return torch.from_numpy(out.astype(np.float32))

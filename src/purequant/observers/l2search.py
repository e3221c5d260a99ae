"""torch.ao's histogram range search (`_non_linear_param_search`), same decisions, less work.

torch.ao walks two quantile bounds, alpha up from 0 and beta down from 1, in steps of 1e-5; each
step moves the bin pointer that advanced further, evaluates the L2 quantization error of the
narrowed range [start_bin, end_bin] and stops as soon as the error grows. That is up to 10^5 Python
iterations, each indexing tensors.

This version takes the same decisions with the same floating-point values:

* the alpha/beta sequences are the same repeated double additions, precomputed once;
* a bound `x * total` is compared against float32 cumulative sums in float32 (torch casts the
  Python scalar to the tensor's dtype), and a pointer walk over a non-decreasing cumulative sum
  is a `searchsorted`;
* iterations that change neither bin only advance beta: they are skipped in one search;
* the error of a candidate range is computed with the same float32 tensor operations in the
  same order as torch.ao, and summed by the same `torch.sum`, so comparisons agree bit for bit.

Cost: O(bins) per evaluated candidate plus O(log steps) per skipped run.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

_STEP = 1e-5  # torch.ao's quantile granularity
_WALK = 100_200  # alpha + beta steps never exceed ~1 / _STEP; the margin covers rounding drift


@functools.cache
def _walks() -> tuple[np.ndarray, np.ndarray]:
    """alpha_k and beta_k exactly as torch.ao's repeated `+ stepsize` / `- stepsize` produce them."""
    alpha, beta = [0.0], [1.0]
    a, b = 0.0, 1.0
    for _ in range(_WALK):
        a, b = a + _STEP, b - _STEP
        alpha.append(a)
        beta.append(b)
    return np.array(alpha), np.array(beta)


def _cube_norm(begin: torch.Tensor, end: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    # integral of x^2 over [begin, end], times the density: (end^3 - begin^3) / 3 * density.
    return density * ((end * end * end - begin * begin * begin) / 3)


def l2_error(hist: torch.Tensor, bin_width: float, start: int, end: int, dst_nbins: int) -> float:
    """L2 error of quantizing `hist` to `dst_nbins` levels over bins [start, end].

    Values are taken uniform within each source bin. float32 tensor arithmetic identical to
    torch.ao's `_compute_quantization_error`. O(bins).
    """
    dst_width = bin_width * (end - start + 1) / dst_nbins
    if dst_width == 0.0:
        return 0.0
    bins = hist.shape[0]
    src_begin = (torch.arange(bins) - start) * bin_width
    src_end = src_begin + bin_width
    first = torch.clamp(torch.div(src_begin, dst_width, rounding_mode="floor"), 0, dst_nbins - 1)
    last = torch.clamp(torch.div(src_end, dst_width, rounding_mode="floor"), 0, dst_nbins - 1)
    density = hist / bin_width
    half = dst_width / 2
    # Three parts per source bin: its piece of the first destination bin it touches, the
    # destination bins it covers whole, and its piece of the last one.
    head = _cube_norm(src_begin - (first + 0.5) * dst_width, torch.ones(bins) * half, density)
    whole = (last - first - 1) * _cube_norm(torch.tensor(-half), torch.tensor(half), density)
    tail = _cube_norm(torch.tensor(-half), src_end - (last * dst_width + half), density)
    return (torch.zeros(bins) + head + whole + tail).sum().item()


def _first_at_least(csum: np.ndarray, bound: np.float32, start: int, end: int) -> int:
    # torch.ao: l = start; while l < end and csum[l] < bound: l += 1
    return min(end, max(start, int(np.searchsorted(csum, bound, side="left"))))


def _last_at_most(csum: np.ndarray, bound: np.float32, start: int, end: int) -> int:
    # torch.ao: r = end; while r > start and csum[r] > bound: r -= 1
    return max(start, min(end, int(np.searchsorted(csum, bound, side="right")) - 1))


def search_bins(csum: np.ndarray, total: float, error) -> tuple[int, int]:
    """The [start_bin, end_bin] torch.ao's search settles on.

    Reads the float32 cumulative histogram `csum`, its total (a float) and `error(start, end)`.
    Returns bin indices. O(evaluations * cost(error) + skipped runs * log(steps)).
    """
    alpha, beta = _walks()
    lower = (alpha * total).astype(np.float32)
    upper = (beta * total).astype(np.float32)
    neg_upper, neg_beta = -upper, -beta  # non-decreasing, for searchsorted
    i = j = 0
    start, end = 0, len(csum) - 1
    best = math.inf
    while alpha[i] < beta[j]:
        lo = _first_at_least(csum, lower[i + 1], start, end)
        hi = _last_at_most(csum, upper[j + 1], start, end)
        if lo == start and hi == end:
            # Only beta moves until csum[end] exceeds its bound, or the walk ends first.
            if end == start:
                break
            move = int(np.searchsorted(neg_upper, -csum[end], side="right")) - 1
            stop = int(np.searchsorted(neg_beta, -alpha[i], side="left"))
            if stop <= move:
                break
            j = move
            continue
        if lo - start > end - hi:
            i, candidate = i + 1, (lo, end)
        else:
            j, candidate = j + 1, (start, hi)
        norm = error(*candidate)
        if norm > best:
            break
        best = norm
        start, end = candidate
    return start, end


def l2_range(hist: torch.Tensor, min_val: float, max_val: float, dst_nbins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.ao's search result as float32 0-d tensors (new_min, new_max). O(see search_bins)."""
    bins = hist.shape[0]
    lo_t, hi_t = torch.tensor(min_val), torch.tensor(max_val)
    width_t = (hi_t - lo_t) / bins
    width = (max_val - min_val) / bins  # torch.ao uses the float64 width for the error
    csum = torch.cumsum(hist, dim=0).numpy()
    total = torch.sum(hist).item()
    start, end = search_bins(csum, total, lambda s, e: l2_error(hist, width, s, e, dst_nbins))
    return lo_t + width_t * start, lo_t + width_t * (end + 1)

"""Range searches torch.ao lacks, on the exactly mergeable `DyadicHistogram`.

* "percentile": clip to the p-th percentile of |x| (tails="abs") or to the (100-p)-th and p-th
  percentiles (tails="both"); linear interpolation within a bin.
* "mse": among ranges with ends alpha * min, alpha * max (alpha = k / grid), pick the one whose
  quantize-dequantize round trip has the least squared error over the histogram (bin centres
  stand for their values); affine ends are searched one at a time.
* "entropy": TensorRT-style KL calibration on the |x| histogram: the threshold whose clipped,
  requantized distribution diverges least from the original.

Each returns a float range; qparams then follow the spec's qscheme with torch.ao's formula. All
are pure functions of the histogram, so they inherit its exact merge.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .dyadic import DyadicHistogram, validate_dyadic
from .errors import ObserverConfigError
from .formula import quant_range, scalar_range_qparams, scale_zero_point
from .minmax import check_range
from .spec import ObserverSpec, QParams
from .tensorutil import f32


def validate_percentile(spec: ObserverSpec) -> None:
    """Dyadic checks plus percentile in [50, 100] and tails in {"abs", "both"}."""
    validate_dyadic(spec)
    p = spec.option("percentile", 99.99)
    if not 50.0 <= p <= 100.0:
        raise ObserverConfigError(f"percentile must be in [50, 100], got {p}")
    if _tails(spec) not in ("abs", "both"):
        raise ObserverConfigError(f"tails must be 'abs' or 'both', got {_tails(spec)!r}")


def validate_mse(spec: ObserverSpec) -> None:
    """Dyadic checks plus an int grid >= 1."""
    validate_dyadic(spec)
    grid = spec.option("grid", 100)
    if not (isinstance(grid, int) and grid >= 1):
        raise ObserverConfigError(f"grid must be a positive int, got {grid!r}")


def _tails(spec: ObserverSpec) -> str:
    return spec.option("tails", "abs" if spec.symmetric else "both")


def _abs_counts(h: DyadicHistogram) -> np.ndarray:
    # Bin bins/2 + i holds [i*w, (i+1)*w); bin bins/2 - 1 - i holds its mirror image.
    counts = h.filled()[1].numpy().astype(np.float64)
    half = counts.shape[0] // 2
    return counts[half:] + counts[:half][::-1]


def _quantile(counts: np.ndarray, rank: float, left: float, width: float) -> float:
    """Value of the given rank, bins starting at `left`; 0 < rank < counts.sum(). O(bins)."""
    cum = np.cumsum(counts)
    k = int(np.searchsorted(cum, rank, side="left"))
    before = cum[k - 1] if k else 0.0
    return left + width * (k + (rank - before) / counts[k])


def percentile_range(spec: ObserverSpec, h: DyadicHistogram) -> tuple[float, float]:
    """Clipping range at spec.option("percentile") (default 99.99). O(bins)."""
    q = spec.option("percentile", 99.99) / 100.0
    w = h.bin_width()
    if _tails(spec) == "abs":
        counts = _abs_counts(h)
        rank = q * counts.sum()
        top = max(-h.min_val, h.max_val)
        t = top if rank >= counts.sum() else min(top, _quantile(counts, rank, 0.0, w))
        return f32(max(h.min_val, -t)), f32(min(h.max_val, t))
    counts = h.filled()[1].numpy().astype(np.float64)
    total, left = counts.sum(), -w * (counts.shape[0] // 2)
    lo_rank, hi_rank = (1.0 - q) * total, q * total
    lo = h.min_val if lo_rank <= 0 else max(h.min_val, _quantile(counts, lo_rank, left, w))
    hi = h.max_val if hi_rank >= total else min(h.max_val, _quantile(counts, hi_rank, left, w))
    return f32(lo), f32(max(lo, hi))


def _best(spec: ObserverSpec, lo: torch.Tensor, hi: torch.Tensor, centres: torch.Tensor,
          weights: torch.Tensor) -> int:
    """Index of the candidate range [lo[k], hi[k]] with least weighted round-trip error.

    Ties go to the widest candidate (the last). O(candidates * len(centres)).
    """
    qr = quant_range(spec)
    scale, zero_point = scale_zero_point(spec, qr, lo, hi)
    s, z = scale.double()[:, None], zero_point.double()[:, None]
    q = torch.clamp(torch.round(centres / s) + z, qr.qmin, qr.qmax)
    error = (((q - z) * s - centres) ** 2 * weights).sum(dim=1)
    return lo.shape[0] - 1 - int(torch.argmin(error.flip(0)))


def mse_range(spec: ObserverSpec, h: DyadicHistogram) -> tuple[float, float]:
    """The range with least quantization MSE over the histogram. O(grid * nonzero bins).

    Symmetric: thresholds alpha * max|x|. Affine: coordinate descent, two rounds of the upper
    end alpha * max (lower end fixed) then the lower end alpha * min, so an outlier on one side
    does not drag the other side in.
    """
    counts = h.filled()[1].numpy()
    (nonzero,) = np.nonzero(counts)
    w, half = h.bin_width(), counts.shape[0] // 2
    centres = torch.from_numpy(np.clip((nonzero - half + 0.5) * w, h.min_val, h.max_val))
    weights = torch.from_numpy(counts[nonzero].astype(np.float64))
    grid = spec.option("grid", 100)
    alphas = torch.arange(1, grid + 1, dtype=torch.float64) / grid
    if spec.symmetric:
        top = max(-h.min_val, h.max_val)
        lo, hi = (alphas * -top).float(), (alphas * top).float()
        k = _best(spec, lo, hi, centres, weights)
        return float(lo[k]), float(hi[k])
    base_lo, base_hi = min(h.min_val, 0.0), max(h.max_val, 0.0)
    lo, hi = f32(base_lo), f32(base_hi)
    for _ in range(2):
        his = (alphas * base_hi).float()
        hi = float(his[_best(spec, torch.full_like(his, lo), his, centres, weights)])
        los = (alphas * base_lo).float()
        lo = float(los[_best(spec, los, torch.full_like(los, hi), centres, weights)])
    return lo, hi


def _smooth(d: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    # Give empty bins a little mass taken evenly from the others, so KL stays finite.
    zero = d == 0
    n_zero, n_nonzero = int(zero.sum()), int(d.size - zero.sum())
    if n_nonzero == 0:
        return None
    return np.maximum(d + eps * zero - (eps * n_zero / n_nonzero) * ~zero, 1e-12)


def _divergence(a: np.ndarray, outliers: float, positions: np.ndarray, i: int, nq: int) -> float:
    """KL between the first i bins (outliers folded into the last) and their nq-level copy.

    `outliers` is a[i:].sum() and `positions` is arange(>= i), both precomputed by the caller.
    """
    p = a[:i].copy()
    p[i - 1] += outliers
    present = p != 0
    group = np.minimum(positions[:i] // (i // nq), nq - 1)
    mass = np.bincount(group, weights=a[:i], minlength=nq)
    members = np.bincount(group, weights=present, minlength=nq)
    q = np.where(present, mass[group] / np.maximum(members[group], 1), 0.0)
    if q.sum() == 0:
        return math.inf
    ps, qs = _smooth(p / p.sum()), _smooth(q / q.sum())
    if ps is None or qs is None:
        return math.inf
    return float(np.sum(ps * np.log(ps / qs)))


def entropy_range(spec: ObserverSpec, h: DyadicHistogram) -> tuple[float, float]:
    """KL-optimal symmetric threshold t on |x|; range = [min, max] clipped to [-t, t].

    Levels: half the integer range when values are signed (or the scheme symmetric), the whole
    range otherwise. O(candidates * bins): every bin count from nq to the last non-empty bin is
    a candidate (~150 ms at the default 4096 bins); option `stride` thins the candidates.
    """
    qr = quant_range(spec)
    levels = qr.qmax - qr.qmin + 1
    nq = levels // 2 if (spec.symmetric or h.min_val < 0) else levels
    a = _abs_counts(h)
    used = int(np.nonzero(a)[0][-1]) + 1 if a.any() else 1
    if used <= nq:
        return h.min_val, h.max_val  # every value keeps its own level: no clipping pays off
    stride = spec.option("stride", 1)
    candidates = list(range(nq, used + 1, stride))
    if candidates[-1] != used:
        candidates.append(used)
    outliers = np.concatenate([np.cumsum(a[::-1])[::-1], [0.0]])  # outliers[i] = a[i:].sum()
    positions = np.arange(a.shape[0])
    kl = [_divergence(a, outliers[i], positions, i, nq) for i in candidates]
    t = candidates[int(np.argmin(kl))] * h.bin_width()
    return f32(max(h.min_val, -t)), f32(min(h.max_val, t))


def search_qparams(search):
    """Wrap a range search into a qparams rule: check the statistic, search, apply the formula."""

    def rule(spec: ObserverSpec, stats: DyadicHistogram, where: str | None) -> QParams:
        check_range(spec.kind, stats.min_val, stats.max_val, where)
        lo, hi = search(spec, stats)
        return scalar_range_qparams(spec, lo, hi, where)

    rule.__doc__ = f"qparams from `{search.__name__}` on a DyadicHistogram."
    return rule

"""torch.ao-compatible histogram statistics: kind "histogram".

torch.ao's HistogramObserver keeps one histogram over the running [min, max]; when a batch widens
the range it re-bins the old histogram (upsampling, then bucketing mid-points), so its result
depends on batch order and two histograms cannot be merged exactly. Here the statistic is an
ordered tuple of chunks, replayed in order by `replay_histogram`:

* `HistState` is torch.ao's state (histogram, min, max) after a run of batches that started from
  nothing: it is exact as the first chunk.
* `RawBatch` is one observed batch kept verbatim (a float32 copy): it replays exactly wherever it
  sits, because torch.ao bins each batch against the range in force when it arrives.

merge concatenates chunk tuples (exactly associative, identity = no chunks). qparams replay
torch.ao's combining over the chunks, so they equal torch.ao's on the concatenated batch sequence
as long as every chunk after the first is raw. A `HistState` after the first chunk (a shard that
already folded its batches) is combined with torch.ao's own re-binning, an approximation;
`HistogramStats.exact` reports which case holds.

Memory: option `raw_budget` bounds the raw elements kept (4 bytes each). observe folds the oldest
chunks into a leading `HistState` to stay within it. The default 0 folds at once: O(bins) memory
and exactly torch.ao for one stream; merged shards are then approximate. `raw_budget=None` keeps
every batch (memory = all observed elements), making sharded calibration exact.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from attrs import cmp_using, field, frozen

from . import lastfold
from .errors import InvalidStatsError, ObserverConfigError, located
from .formula import quant_range, range_qparams
from .histc import histc
from .l2search import l2_range
from .minmax import empty_error
from .spec import ObserverSpec, QParams
from .tensorutil import check_finite_floats, detached, tensor_range, tensors_equal

_TENSOR_EQ = cmp_using(eq=tensors_equal)
# torch.ao's destination bin count is 2 ** torch.iinfo(dtype).bits, which is 8 for quint4x2.
_DST_NBINS = {"quint8": 256, "qint8": 256, "qint32": 2**32, "quint4x2": 256}


@frozen(unsafe_hash=False)
class RawBatch:
    """One observed batch kept verbatim. `values` is a private float32 copy, never mutated."""

    values: torch.Tensor = field(eq=_TENSOR_EQ)
    min_val: float
    max_val: float


@frozen(unsafe_hash=False)
class HistState:
    """torch.ao's HistogramObserver buffers: float32 histogram of `bins` over [min, max]."""

    hist: torch.Tensor = field(eq=_TENSOR_EQ)
    min_val: float
    max_val: float


@frozen(unsafe_hash=False)
class HistogramStats:
    """Ordered chunks to replay; the identity has none.

    Attributes:
        chunks: RawBatch / HistState values in observation order.
        raw_elements: total elements held by the RawBatch chunks (the budgeted memory).
    """

    chunks: tuple[RawBatch | HistState, ...] = ()
    raw_elements: int = 0

    @property
    def empty(self) -> bool:
        """True for the identity."""
        return not self.chunks

    @property
    def exact(self) -> bool:
        """True when replay equals torch.ao on the batch sequence (no HistState after the first)."""
        return all(isinstance(c, RawBatch) for c in self.chunks[1:])


EMPTY_HISTOGRAM = HistogramStats()


def _read_options(spec: ObserverSpec) -> tuple[int, int, int | None]:
    return spec.option("bins", 2048), spec.option("upsample_rate", 16), spec.option("raw_budget", 0)


# Three persistent-map reads cost ~3 us per observe; a model observes ~100 values per batch.
_cached_options = lru_cache(maxsize=256)(_read_options)


def _options(spec: ObserverSpec) -> tuple[int, int, int | None]:
    try:
        return _cached_options(spec)
    except TypeError:  # an unhashable option value: read it each time
        return _read_options(spec)


def validate_histogram(spec: ObserverSpec) -> None:
    """Per-tensor, static, integer dtype; bins/upsample_rate >= 1; raw_budget None or >= 0."""
    if spec.per_channel or spec.is_dynamic:
        raise ObserverConfigError(
            f"kind {spec.kind!r} is per-tensor and static; got qscheme {spec.qscheme!r}, "
            f"is_dynamic={spec.is_dynamic}"
        )
    quant_range(spec)
    bins, upsample, budget = _options(spec)
    if not (isinstance(bins, int) and bins >= 1 and isinstance(upsample, int) and upsample >= 1):
        raise ObserverConfigError(f"bins and upsample_rate must be positive ints, got {bins}, {upsample}")
    if budget is not None and not (isinstance(budget, int) and budget >= 0):
        raise ObserverConfigError(f"raw_budget must be None or an int >= 0, got {budget!r}")


def init_histogram(spec: ObserverSpec) -> HistogramStats:
    """The identity statistic. O(1)."""
    return EMPTY_HISTOGRAM


def _rebin(state: HistState, lo: float, hi: float, bins: int, upsample: int) -> torch.Tensor:
    """`state`'s histogram mapped onto `bins` bins over [lo, hi] ⊇ its range, as torch.ao does.

    Each bin is split into `upsample` equal parts whose mid-points are bucketed into the new
    bins. O(bins * upsample). Returns a new tensor.
    """
    if state.min_val == lo and state.max_val == hi:
        return state.hist
    old_lo, old_hi = torch.tensor(state.min_val), torch.tensor(state.max_val)
    if state.min_val == state.max_val:
        # A single-valued histogram moves as one spike.
        return torch.histc(old_lo, bins, min=lo, max=hi) * torch.sum(state.hist)
    fine = state.hist.repeat_interleave(upsample) / upsample
    width = (old_hi - old_lo) / (bins * upsample)
    mids = torch.linspace(old_lo, old_hi, bins * upsample + 1)[:-1] + 0.5 * width
    edges = torch.linspace(torch.tensor(lo), torch.tensor(hi), bins + 1)
    where = (torch.bucketize(mids, edges, right=True) - 1).clamp(0, bins - 1)
    return torch.bincount(where, weights=fine, minlength=bins)


def fold_batch(state: HistState | None, values: torch.Tensor, lo: float, hi: float,
               bins: int, upsample: int) -> HistState:
    """torch.ao's forward step: bin `values` (range [lo, hi]) over the widened range and add.

    O(numel + bins * upsample). Returns a new HistState.
    """
    return _fold(state, values, lo, hi, bins, upsample)[0]


def _fold(state: HistState | None, values: torch.Tensor, lo: float, hi: float,
          bins: int, upsample: int) -> tuple[HistState, torch.Tensor]:
    """fold_batch, also returning the batch's own counts over the new range."""
    if state is None:
        update = histc(values, bins, lo, hi)
        return HistState(update, lo, hi), update
    new_lo, new_hi = min(state.min_val, lo), max(state.max_val, hi)
    update = histc(values, bins, new_lo, new_hi)
    return HistState(update + _rebin(state, new_lo, new_hi, bins, upsample), new_lo, new_hi), update


def combine_states(a: HistState, b: HistState, bins: int, upsample: int) -> HistState:
    """Approximate union of two folded histograms: both re-binned onto the joint range.

    Used only when a folded shard is merged after another one. O(bins * upsample).
    """
    lo, hi = min(a.min_val, b.min_val), max(a.max_val, b.max_val)
    return HistState(_rebin(a, lo, hi, bins, upsample) + _rebin(b, lo, hi, bins, upsample), lo, hi)


def _absorb(state: HistState | None, chunk: RawBatch | HistState, bins: int, upsample: int) -> HistState:
    if isinstance(chunk, RawBatch):
        return fold_batch(state, chunk.values, chunk.min_val, chunk.max_val, bins, upsample)
    return chunk if state is None else combine_states(state, chunk, bins, upsample)


def _size(chunk: RawBatch | HistState) -> int:
    return chunk.values.numel() if isinstance(chunk, RawBatch) else 0


def _raw_batch(x: torch.Tensor, lo: float, hi: float) -> RawBatch:
    # Always a private copy: the caller may change its tensor in place later (an inplace ReLU).
    return RawBatch(detached(x).to(torch.float32, copy=True).reshape(-1), lo, hi)


def observe_histogram(spec: ObserverSpec, stats: HistogramStats, x: torch.Tensor,
                      where: str | None) -> HistogramStats:
    """Add a batch: kept raw if it fits raw_budget, after folding the oldest chunks as needed.

    O(numel) for the copy or the fold, plus O(bins * upsample) per re-binning fold.
    """
    if x.numel() == 0:
        return stats
    bins, upsample, budget = _options(spec)
    chunks = stats.chunks
    if budget == 0 and (not chunks or (len(chunks) == 1 and isinstance(chunks[0], HistState))):
        return _fold_now(stats, detached(x), bins, upsample, where)
    lo, hi = tensor_range(x, where)
    values = detached(x).to(torch.float32)
    n, raw = values.numel(), stats.raw_elements
    if budget is None or raw + n <= budget:
        return HistogramStats(chunks + (_raw_batch(x, lo, hi),), raw + n)
    state: HistState | None = None
    k = 0
    while k < len(chunks) and raw + n > budget:
        state, raw, k = _absorb(state, chunks[k], bins, upsample), raw - _size(chunks[k]), k + 1
    if state is not None and raw + n <= budget:
        return HistogramStats((state,) + chunks[k:] + (_raw_batch(x, lo, hi),), raw + n)
    return HistogramStats((fold_batch(state, values, lo, hi, bins, upsample),), 0)


def _fold_now(stats: HistogramStats, x: torch.Tensor, bins: int, upsample: int,
              where: str | None) -> HistogramStats:
    """The default path (raw_budget 0, nothing raw held): fold `x` into the single state.

    A value that repeats the last fold's (a view or a clamp of it, see lastfold.py) takes its
    counts from that fold instead of binning again; the result is the same either way.
    """
    state = stats.chunks[0] if stats.chunks else None
    known = None
    if state is not None:
        known = lastfold.same_values(stats, x, bins) or lastfold.clamped(
            stats, x, state.min_val, state.max_val, bins)
    if known is not None:
        update, lo, hi = known
        new = HistState(update + state.hist, state.min_val, state.max_val)
    else:
        lo, hi = tensor_range(x, where)
        values = x if x.dtype == torch.float32 else x.to(torch.float32)
        new, update = _fold(state, values, lo, hi, bins, upsample)
    out = HistogramStats((new,), 0)
    lastfold.remember(out, x, lo, hi, update, bins)
    return out


def merge_histogram(spec: ObserverSpec, a: HistogramStats, b: HistogramStats,
                    where: str | None) -> HistogramStats:
    """Concatenate chunk sequences: `a`'s batches, then `b`'s. Exactly associative. O(chunks)."""
    if b.empty:
        return a
    if a.empty:
        return b
    return HistogramStats(a.chunks + b.chunks, a.raw_elements + b.raw_elements)


def replay_histogram(spec: ObserverSpec, stats: HistogramStats) -> HistState:
    """Fold all chunks in order into torch.ao's final (histogram, min, max). Non-empty stats.

    O(raw elements + chunks * bins * upsample).
    """
    bins, upsample, _ = _options(spec)
    state: HistState | None = None
    for chunk in stats.chunks:
        state = _absorb(state, chunk, bins, upsample)
    if state is None:
        raise empty_error(spec.kind, None)
    return state


def qparams_histogram(spec: ObserverSpec, stats: HistogramStats, where: str | None) -> QParams:
    """torch.ao's HistogramObserver.calculate_qparams on the replayed histogram.

    O(replay + search); the L2 search is O(bins) per candidate range it evaluates.
    """
    if stats.empty:
        raise empty_error(spec.kind, where)
    state = replay_histogram(spec, stats)
    check_finite_floats(spec.kind, (state.min_val, state.max_val), where)
    if state.hist.shape != (_options(spec)[0],):
        raise InvalidStatsError(located(
            f"histogram has {state.hist.shape[0]} bins but the spec says {_options(spec)[0]}", where))
    lo, hi = l2_range(state.hist, state.min_val, state.max_val, _DST_NBINS[spec.dtype])
    return range_qparams(spec, lo, hi, where)

"""Observers as pure statistics: `init_stats`, `observe`, `merge`, `qparams`, dispatched by kind.

Statistics are immutable attrs values (tensors inside are never written to), picklable, and
merge associatively so calibration can be sharded. See docs/observers.md.
"""

from .dispatch import RULES, KindRules, init_stats, merge, observe, qparams
from .dyadic import DyadicHistogram
from .errors import (
    EmptyStatsError,
    InvalidStatsError,
    NonFiniteError,
    NoQParamsError,
    ObserverConfigError,
    ObserverError,
    ObserverMergeError,
    ObserverShapeError,
    StatsTypeError,
)
from .histogram import HistogramStats, HistState, RawBatch
from .minmax import RangeStats
from .perchannel import ChannelRangeStats
from .spec import OBSERVER_KINDS, ObserverSpec, QParams
from .torch_compat import from_torch_observer
from .trivial import NoStats

__all__ = [
    "OBSERVER_KINDS",
    "RULES",
    "ChannelRangeStats",
    "DyadicHistogram",
    "EmptyStatsError",
    "HistState",
    "HistogramStats",
    "InvalidStatsError",
    "KindRules",
    "NoQParamsError",
    "NoStats",
    "NonFiniteError",
    "ObserverConfigError",
    "ObserverError",
    "ObserverMergeError",
    "ObserverShapeError",
    "ObserverSpec",
    "QParams",
    "RangeStats",
    "RawBatch",
    "StatsTypeError",
    "from_torch_observer",
    "init_stats",
    "merge",
    "observe",
    "qparams",
]

"""The observer exception hierarchy.

Every error raised by `purequant.observers` is an `ObserverError`. Messages say what happened and
what to do; `where` (usually a node name supplied by the caller) is prefixed when given, so the
calibration runner can pass the node id without re-wrapping the exception.
"""

from __future__ import annotations

from ..errors import PurequantError


def located(message: str, where: str | None) -> str:
    """Prefix `message` with its location. Reads nothing else; O(len(message))."""
    return f"{where}: {message}" if where else message


class ObserverError(PurequantError):
    """Base class of every observer error (part of purequant's one hierarchy)."""


class ObserverConfigError(ObserverError, ValueError):
    """The spec cannot be used by its kind (wrong qscheme, bad quant range, bad option)."""


class EmptyStatsError(ObserverError):
    """qparams were requested from statistics that never observed a tensor."""


class NonFiniteError(ObserverError):
    """An observed tensor, or the statistics themselves, contain NaN or infinity."""


class InvalidStatsError(ObserverError):
    """Statistics that observe could not have produced (e.g. min > max)."""


class ObserverShapeError(ObserverError):
    """An observed tensor does not fit the statistics (e.g. a different channel count)."""


class ObserverMergeError(ObserverError):
    """Two statistics cannot be merged (order-dependent kind, or mismatched shapes)."""


class NoQParamsError(ObserverError):
    """The kind has no qparams of its own (placeholder, noop)."""


class StatsTypeError(ObserverError, TypeError):
    """Statistics of one kind were handed to the rules of another."""

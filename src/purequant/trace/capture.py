"""Running torch.fx on the user's model, and explaining why when it cannot trace it."""

from __future__ import annotations

import linecache
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx

from ..errors import TraceError
from .specs import type_name
from .tracer import CaptureTracer, user_frame_of_traceback


def split_leaves(model: torch.nn.Module, leaf_modules: Iterable[Any]) -> tuple[tuple[type, ...], frozenset[str]]:
    """Split `leaf_modules` into module classes and module paths, checking each one.

    Raises:
        TraceError: an entry is neither an nn.Module subclass nor a path of a submodule.
    """
    if isinstance(leaf_modules, (str, type)):
        leaf_modules = (leaf_modules,)
    types, paths = [], []
    for entry in leaf_modules:
        if isinstance(entry, type) and issubclass(entry, torch.nn.Module):
            types.append(entry)
        elif isinstance(entry, str):
            try:
                model.get_submodule(entry)
            except AttributeError:
                raise TraceError(
                    f"leaf_modules names {entry!r}, which is not a submodule path of "
                    f"{type(model).__name__}",
                    hint="use a path from model.named_modules(), e.g. 'layer1.0'",
                ) from None
            paths.append(entry)
        else:
            raise TraceError(
                f"leaf_modules entries must be nn.Module classes or module paths, got {entry!r}"
            )
    return tuple(types), frozenset(paths)


def capture(
    model: torch.nn.Module,
    leaf_types: tuple[type, ...],
    leaf_paths: frozenset[str],
    concrete_args: dict[str, Any] | None,
) -> tuple[torch.fx.Graph, CaptureTracer]:
    """Trace `model` with a CaptureTracer; the model is left as it was.

    Returns:
        The fx Graph and the tracer (its `provenance` and `constants` tables are read later).

    Raises:
        TraceError: torch.fx failed; the message names the innermost module being traced, the
            user's source line, and how to make that module a leaf.
    """
    tracer = CaptureTracer(model, leaf_types, leaf_paths)
    try:
        graph = tracer.trace(model, concrete_args)
    except Exception as e:  # fx raises its own TraceError, RuntimeError, TypeError, ...
        raise _untraceable(model, tracer, e) from e
    return graph, tracer


def _untraceable(model: torch.nn.Module, tracer: CaptureTracer, error: Exception) -> TraceError:
    reason = error.message if isinstance(error, TraceError) else f"{type(error).__name__}: {error}"
    where = user_frame_of_traceback(error.__traceback__)
    at = ""
    if where is not None:
        line = linecache.getline(where[0], where[1]).strip()
        at = f"\n  at {where[0]}:{where[1]}" + (f": {line}" if line else "")
    if tracer.failed_in is None or tracer.failed_in[0] in ("", "<unregistered module>"):
        return TraceError(
            f"torch.fx cannot trace the model {type_name(type(model))}: {reason}{at}",
            hint="remove the data-dependent Python (if/for/len on tensors) from its forward, "
            "or fix those values with concrete_args={...}",
        )
    path, cls = tracer.failed_in
    return TraceError(
        f"torch.fx cannot trace submodule {path!r} ({type_name(cls)}): {reason}{at}",
        hint=f"make it a leaf, called whole instead of traced into: "
        f"purequant.trace(model, leaf_modules=({cls.__name__},)) for every {cls.__name__}, "
        f"or purequant.trace(model, leaf_modules=({path!r},)) for this one",
    )

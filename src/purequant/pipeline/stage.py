"""The stage protocol: what a stage is given, what it returns, and the state it works on.

Calling convention (the one way to write a stage). For a `StageSpec` with `reads=("a", "b")`:

    fn(graph, [params], [modules], record_a, record_b, **options)

`params` is passed iff `uses_params`, `modules` iff `uses_modules`, in that order; the records
read are the ones earlier stages stored under those names, positionally. A stage returns one of:

* a record alone -- an *analysis*: the graph and tables are unchanged;
* `(graph, record)` -- a *transform* that leaves the tables it was given unchanged;
* `(graph, *tables, record)` -- a transform that returns every table it was given, in the order
  it was given them: `(graph, params, record)`, `(graph, modules, record)` or
  `(graph, params, modules, record)`.

The runner tells them apart by one rule: a tuple whose first item is a `Graph` is a transform's
result; anything else is a record. Records are plain data and never hold a graph first, so the
rule is unambiguous; a bare `Graph` is refused (write `(graph, None)` if there are no facts).
A stage with nothing to do returns the very same graph (and table) objects, so the runner and
its instruments can see "no change" by identity in O(1).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

import attrs
from attrs import field, frozen
from pyrsistent import PMap, pmap

from ..errors import ConfigError, StageError
from ..ir import Graph
from ..ir.node import as_pmap
from .codec import CodecError, to_plain

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")



@frozen
class PipelineState:
    """Everything a pipeline works on, as one immutable value.

    Attributes:
        graph: the current graph.
        params: parameter/buffer path -> tensor (tensors are never mutated, only replaced).
        modules: call_module target -> ModuleSpec.
        records: stage name -> the record that stage returned (the latest one, if a name runs
            twice).
    """

    graph: Graph
    params: PMap = field(factory=pmap, converter=as_pmap)
    modules: PMap = field(factory=pmap, converter=as_pmap)
    records: PMap = field(factory=pmap, converter=as_pmap)


def fn_name(fn: Callable) -> str:
    """`module.qualname` of a module-level function, checked to import back to `fn`.

    Raises:
        ConfigError: `fn` is a lambda, a closure, a method or otherwise not importable by name.
    """
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not callable(fn) or module is None or "<" in qualname or "." in qualname:
        raise ConfigError(
            f"stage function {fn!r} is not a module-level function",
            hint="define stages with `def` at module level so replay can import them by name",
        )
    if getattr(importlib.import_module(module), qualname, None) is not fn:
        raise ConfigError(f"{module}.{qualname} does not import back to {fn!r}")
    return f"{module}.{qualname}"


def _check_name(spec: StageSpec, attribute: Any, value: str) -> None:
    if not _NAME.match(value):
        raise ConfigError(f"stage name {value!r} must be an identifier (it names a folder and a record)")


def _check_fn(spec: StageSpec, attribute: Any, value: Callable) -> None:
    fn_name(value)


def _check_options(spec: StageSpec, attribute: Any, value: PMap) -> None:
    try:
        to_plain(value)
    except CodecError as e:
        raise ConfigError(f"options of stage {spec.name!r} are not plain data: {e.message}") from None


@frozen
class StageSpec:
    """One step of a pipeline: which function, what it reads, and its options.

    Attributes:
        name: identifier; the record is stored under it and the dump folder is named after it.
        fn: a module-level pure function following the calling convention above.
        reads: names of earlier records, passed positionally after the graph and tables.
        uses_params: pass the params table (second argument).
        uses_modules: pass the modules table (after params, if both).
        options: plain keyword options (they must encode with `codec.to_plain`).
        phase: the phase the stage's output is in (`"OBSERVED"`, `"LOWERED"`), or None to stay
            in the phase the previous stages left.
    """

    name: str = field(validator=_check_name)
    fn: Callable = field(validator=_check_fn)
    reads: tuple = field(default=(), converter=tuple)
    uses_params: bool = False
    uses_modules: bool = False
    options: PMap = field(factory=pmap, converter=as_pmap, validator=_check_options)
    phase: str | None = None

    @property
    def fn_name(self) -> str:
        return fn_name(self.fn)


def stage(fn: Callable, *, name: str | None = None, reads: tuple[str, ...] = (),
          uses_params: bool = False, uses_modules: bool = False, phase: str | None = None,
          **options: Any) -> StageSpec:
    """Shorthand for StageSpec: the name defaults to the function's name, options are kwargs."""
    return StageSpec(name or fn.__name__, fn, reads, uses_params, uses_modules, pmap(options), phase)


def call_stage(spec: StageSpec, state: PipelineState) -> tuple[PipelineState, Any]:
    """Call `spec.fn` on `state` by the calling convention; return the new state and the record.

    The record is stored in the new state's `records[spec.name]`. O(reads) besides the stage.

    Raises:
        StageError: a record it reads is missing, or the result breaks the convention.
    """
    tables = _tables(spec, state)
    records = tuple(_read(spec, state, name) for name in spec.reads)
    result = spec.fn(state.graph, *tables, *records, **spec.options)
    graph, new_tables, record = _unpack(spec, result, state.graph, tables)
    changes: dict[str, Any] = {"graph": graph, "records": state.records.set(spec.name, record)}
    if spec.uses_params:
        changes["params"] = new_tables[0]
    if spec.uses_modules:
        changes["modules"] = new_tables[-1]
    return attrs.evolve(state, **changes), record


def _tables(spec: StageSpec, state: PipelineState) -> tuple[PMap, ...]:
    return ((state.params,) if spec.uses_params else ()) + ((state.modules,) if spec.uses_modules else ())


def _read(spec: StageSpec, state: PipelineState, name: str) -> Any:
    if name not in state.records:
        have = ", ".join(sorted(state.records)) or "none"
        raise StageError(
            f"reads record {name!r}, which no earlier stage produced (records so far: {have})",
            stage=spec.name,
            hint=f"run the stage named {name!r} before {spec.name!r}",
        )
    return state.records[name]


def _unpack(spec: StageSpec, result: Any, graph: Graph, tables: tuple) -> tuple[Graph, tuple, Any]:
    if isinstance(result, Graph):
        raise _convention(spec, "returned a bare Graph")
    if not (type(result) is tuple and result and isinstance(result[0], Graph)):
        return graph, tables, result  # an analysis: only a record
    if len(result) == 2:
        return result[0], tables, result[1]
    if len(result) != 2 + len(tables):
        raise _convention(spec, f"returned a tuple of {len(result)} starting with a Graph")
    new_tables = result[1:-1]
    if not all(isinstance(t, PMap) for t in new_tables):
        raise _convention(spec, "returned tables that are not persistent maps")
    return result[0], new_tables, result[-1]


def _convention(spec: StageSpec, what: str) -> StageError:
    names = _tables_names(spec)
    shape = "(graph, record)" + (f" or (graph, {', '.join(names)}, record)" if names else "")
    return StageError(
        f"stage {what}; it must return a record (analysis) or {shape}",
        stage=spec.name,
        hint="see the calling convention in purequant.pipeline.stage",
    )


def _tables_names(spec: StageSpec) -> tuple[str, ...]:
    return (("params",) if spec.uses_params else ()) + (("modules",) if spec.uses_modules else ())

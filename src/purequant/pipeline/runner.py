"""The runner: apply stages in order, with instruments around each, and record what happened.

`run(stages, state)` returns the final state and one `StageRecord` per stage. When a stage (or an
instrument around it) raises, the error leaves with notes added once: the stage, the stages
already run, the node it concerns printed as a line, where that node came from in the user's
code (`meta["src"]`) and the graph around it. Errors that are not PurequantErrors are wrapped in
a StageError carrying the same notes, with the original as `__cause__`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from attrs import field, frozen
from pyrsistent import PMap, pmap

from ..errors import PurequantError, StageError
from ..ir import Graph, digest, format_node, neighbourhood
from .instruments import DEFAULT_INSTRUMENTS, Instrument, StageContext
from .stage import PipelineState, StageSpec, call_stage
from .tensors import params_touched

_NOTED = "_purequant_noted"
_EMPTY: PMap = pmap()


@frozen
class StageRecord:
    """What one stage of a run did.

    Attributes:
        index: position in the run, from 0.
        name: the stage's name.
        options: the options it ran with.
        input_digest: `ir.digest(graph, canonical=False)` of its input graph.
        output_digest: the same for its output (equal to the input's when unchanged).
        params_changed: param path -> "dtype[shape]" of the new tensor, or None if removed;
            only paths whose tensor object the stage replaced (see `tensors.params_touched`).
        record: the record the stage returned.
        seconds: wall time of the stage function alone; not part of equality, so two runs
            compare equal when they did the same thing.
    """

    index: int
    name: str
    options: PMap
    input_digest: str
    output_digest: str
    params_changed: PMap
    record: Any
    seconds: float = field(default=0.0, eq=False)


def run(stages: Iterable[StageSpec], state: PipelineState, *,
        instruments: Sequence[Instrument] = DEFAULT_INSTRUMENTS, start: int = 0,
        ) -> tuple[PipelineState, tuple[StageRecord, ...]]:
    """Run `stages` in order on `state`.

    Args:
        stages: the stage specs.
        state: the starting state (never modified; it is a value).
        instruments: called around every stage (default: well-formedness checks).
        start: index of the first stage (a run that continues another one's numbering, so
            their dump folders do not collide).

    Returns:
        The final state and a StageRecord per stage. O(sum of the stages) plus two graph
        digests per stage (O(n) each; reused while the graph object is unchanged).
    """
    done: list[str] = []
    out: list[StageRecord] = []
    phase = None
    known: tuple[Graph, str] | None = None
    for index, spec in enumerate(stages, start):
        phase = spec.phase or phase
        ctx = StageContext(spec, index, tuple(done), phase)
        state, rec = run_stage(ctx, state, instruments, known)
        known = (state.graph, rec.output_digest)
        out.append(rec)
        done.append(spec.name)
    return state, tuple(out)


def run_stage(ctx: StageContext, state: PipelineState,
              instruments: Sequence[Instrument] = DEFAULT_INSTRUMENTS,
              known: tuple[Graph, str] | None = None) -> tuple[PipelineState, StageRecord]:
    """Run one stage with instruments and error notes. `known`: a (graph, digest) to reuse."""
    graphs = [state.graph]  # where a failing node id is looked up: the output first, if any
    try:
        for ins in instruments:
            ins.before(ctx, state)
        start = time.perf_counter()
        new, record = call_stage(ctx.spec, state)
        seconds = time.perf_counter() - start
        graphs.append(new.graph)
        rec = _stage_record(ctx, state, new, record, seconds, known)
        for ins in reversed(instruments):
            ins.after(ctx, state, new, rec)
    except PurequantError as e:
        _annotate(e, ctx, graphs)
        raise
    except Exception as e:
        err = StageError(f"{type(e).__name__}: {e}", stage=ctx.spec.name)
        _annotate(err, ctx, graphs)
        raise err from e
    return new, rec


def _stage_record(ctx: StageContext, state: PipelineState, new: PipelineState, record: Any,
                  seconds: float, known: tuple[Graph, str] | None) -> StageRecord:
    d_in = known[1] if known and known[0] is state.graph else digest(state.graph, canonical=False)
    d_out = d_in if new.graph is state.graph else digest(new.graph, canonical=False)
    changed = _EMPTY if new.params is state.params else params_touched(_plain(state.params), _plain(new.params))
    return StageRecord(ctx.index, ctx.spec.name, ctx.spec.options, d_in, d_out, changed, record, seconds)


def _plain(table: PMap) -> Mapping:
    # params_touched looks every path up in both tables; on plain dicts that is ~30x cheaper
    # than on PMaps (1.5 ms -> 0.4 ms for MobileNetV2's fuse), and gives the same answer.
    return MappingProxyType(dict(table.items()))


def _annotate(err: PurequantError, ctx: StageContext, graphs: list[Graph]) -> None:
    """Add the stage notes to `err`, once (an inner runner may have added them already)."""
    if getattr(err, _NOTED, False):
        return
    setattr(err, _NOTED, True)
    if err.stage is None:
        err.stage = ctx.spec.name
    for note in stage_notes(ctx, err.node_id, graphs, shown=err.message):
        err.add_note(note)


def stage_notes(ctx: StageContext, nid: str | None, graphs: Sequence[Graph], *,
                shown: str = "") -> list[str]:
    """The notes for an error in stage `ctx` about node `nid` (looked up in `graphs`, last first)."""
    notes = [f"in stage {ctx.spec.name!r} (#{ctx.index}, {ctx.spec.fn_name})",
             f"stages already run: {', '.join(ctx.done) or '(none)'}"]
    graph = next((g for g in reversed(graphs) if nid is not None and nid in g), None)
    if graph is None:
        return notes
    node = graph.node(nid)
    notes.append(f"node: {format_node(node)}")
    src = node.meta.get("src")
    notes.append(f"from: {src}" if src is not None else "from: (no source location recorded)")
    if ">> " not in shown:  # check_graph errors already print the neighbourhood
        notes.append("graph around it:\n" + neighbourhood(graph, nid))
    return notes


"""Instruments: plain frozen objects the runner calls around every stage (TVM pass-instrument
style, but passed explicitly to `run`, never registered globally).

`before(ctx, state)` runs before the stage in the order given; `after(ctx, state, out, record)`
runs after it in reverse order, so instruments nest like context managers: with
`(CheckWellFormed(), Dump(root))` a stage's output is dumped before it is checked, and a
malformed output can be read on disk. An instrument reports a problem by raising; the runner adds
the stage notes.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from attrs import field, frozen
from pyrsistent import PMap, pmap

from ..errors import ConfigError, StageError
from ..ir import Graph, check_graph

if TYPE_CHECKING:
    from .runner import StageRecord
    from .stage import PipelineState, StageSpec


@frozen
class StageContext:
    """Where a stage sits in a run.

    Attributes:
        index: position in the run, from 0.
        spec: the stage.
        done: names of the stages already run, in order.
        phase: the phase the stage's output must be in (its own, or the last one declared).
    """

    spec: StageSpec
    index: int = 0
    done: tuple[str, ...] = ()
    phase: str | None = None


class Instrument:
    """Base with no-op hooks; subclasses override what they need."""

    def before(self, ctx: StageContext, state: PipelineState) -> None:
        """Called before the stage runs."""

    def after(self, ctx: StageContext, state: PipelineState, out: PipelineState,
              record: StageRecord) -> None:
        """Called after the stage ran, with its input state, output state and record."""


@frozen
class CheckWellFormed(Instrument):
    """`check_graph` on every stage's input, and on its output when that is a new graph.

    An unchanged output (the same object) is not checked twice. O(n + edges) per check.
    """

    def before(self, ctx: StageContext, state: PipelineState) -> None:
        check_graph(state.graph)

    def after(self, ctx, state, out, record) -> None:
        if out.graph is not state.graph:
            check_graph(out.graph)


@frozen
class PhaseRule:
    """The vocabulary of one phase, as data: what may not appear in its graphs.

    Attributes:
        forbid_ops: node ops not allowed (`"call_module"` once modules are materialised...).
        forbid_targets: exact call targets not allowed.
        forbid_prefixes: target prefixes not allowed (`"purequant.observe"`).
        forbid_module_types: ModuleSpec types a call_module node may not have.
    """

    forbid_ops: frozenset = field(default=frozenset(), converter=frozenset)
    forbid_targets: frozenset = field(default=frozenset(), converter=frozenset)
    forbid_prefixes: tuple = field(default=(), converter=tuple)
    forbid_module_types: frozenset = field(default=frozenset(), converter=frozenset)

    def violation(self, graph: Graph, modules: PMap) -> tuple[str, str] | None:
        """The first node outside the vocabulary and why, or None. O(n)."""
        for node in graph.node_list():
            why = self._why(node, modules)
            if why:
                return node.id, why
        return None

    def _why(self, node: Any, modules: PMap) -> str | None:
        if node.op in self.forbid_ops:
            return f"op {node.op}"
        if node.op in ("call_function", "call_method", "call_module"):
            if node.target in self.forbid_targets or node.target.startswith(self.forbid_prefixes):
                return f"target {node.target}"
        spec = modules.get(node.target) if node.op == "call_module" else None
        if spec is not None and spec.type in self.forbid_module_types:
            return f"module type {spec.type}"
        return None


def _to_rules(value: Any) -> PMap:
    return value if isinstance(value, PMap) else pmap(value)


@frozen
class PhaseCheck(Instrument):
    """Check each stage's output against the vocabulary of its phase (nanopass style).

    The phase is the stage's own `phase`, or the last one a previous stage declared, so once a
    pipeline is LOWERED every later stage must stay LOWERED until one declares another phase.

    Attributes:
        rules: phase name -> PhaseRule, e.g. `{"LOWERED": PhaseRule(forbid_prefixes=(...))}`.
    """

    rules: PMap = field(factory=pmap, converter=_to_rules)

    def after(self, ctx, state, out, record) -> None:
        if ctx.phase is None:
            return
        rule = self.rules.get(ctx.phase)
        if rule is None:
            known = ", ".join(sorted(self.rules)) or "none"
            raise ConfigError(f"unknown phase {ctx.phase!r} (known phases: {known})", stage=ctx.spec.name)
        found = rule.violation(out.graph, out.modules)
        if found:
            nid, why = found
            raise StageError(f"{why} is not allowed in phase {ctx.phase}", stage=ctx.spec.name, node_id=nid)


@frozen
class Timing(Instrument):
    """Print one line per stage with its wall time, to `stream` (stderr when None)."""

    stream: TextIO | None = field(default=None, eq=False)
    min_seconds: float = 0.0

    def after(self, ctx, state, out, record) -> None:
        if record.seconds >= self.min_seconds:
            print(f"{ctx.index:03d} {ctx.spec.name}: {record.seconds * 1e3:.1f} ms", file=self.stream or sys.stderr)


DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = (CheckWellFormed(),)

"""Laws every stage should obey, as reusable checks for your own property tests.

A *stage* here is any callable that takes a Graph: a transform returns `(graph, record)`, an
analysis returns a record (bind its other parameters with `functools.partial` or a lambda).
Each check runs the stage and raises AssertionError with a readable message (the law, the
stage's name, the printed graphs or a diff) when the law does not hold.

- `check_well_formed`: the output graph passes `check_graph`.
- `check_pure`: the input graph is unchanged (same text, same node objects).
- `check_deterministic`: two runs on equal inputs give the same output text and equal records.
- `check_noop_identity`: on a graph with nothing to do, the stage returns the very same object.
- `check_idempotent`: running the stage on its own output changes nothing.
- `check_laws`: the first three (and idempotence on request) in one call.

Example:
    >>> import functools
    >>> from purequant.ir import parse_graph
    >>> from purequant.testing import laws
    >>> def drop_relu(graph, target="torch.relu"):
    ...     # A transform: bypass every call of `target`, then erase it.
    ...     erased = []
    ...     for nid in graph.ids():
    ...         node = graph.node(nid)  # the current version: earlier edits may rewire it
    ...         if node.op == "call_function" and node.target == target:
    ...             graph = graph.replace_all_uses(node.id, node.args[0].id).erase(node.id)
    ...             erased.append(node.id)
    ...     return graph, tuple(erased)
    >>> g = parse_graph('''
    ... %x = placeholder x()
    ... %relu = call_function torch.relu(%x)
    ... %relu_1 = call_function torch.relu(%relu)
    ... %output = output output(%relu_1)
    ... ''')
    >>> laws.check_laws(drop_relu, g, idempotent=True)
    >>> laws.check_noop_identity(functools.partial(drop_relu, target="torch.tanh"), g)

With Hypothesis, draw the graphs from `purequant.testing.strategies.graphs()`; see
docs/testing.md.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import pprint
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from pyrsistent import PVector

from ..errors import GraphError, PurequantError
from ..ir import Graph, check_graph, print_graph

__all__ = [
    "check_deterministic", "check_idempotent", "check_laws", "check_noop_identity", "check_pure",
    "check_well_formed", "run_stage", "same_value",
]

Stage = Callable[[Graph], Any]
_FIELDS = ("nodes", "users_map", "prev", "next", "pos", "head", "tail", "counters")


# --------------------------------------------------------------------------- helpers
def run_stage(stage: Stage, graph: Graph) -> tuple[Graph | None, Any]:
    """Run `stage` and split its result into (output graph or None, record)."""
    result = stage(graph)
    if isinstance(result, Graph):
        return result, None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Graph):
        return result[0], result[1]
    return None, result


def _name(stage: Stage) -> str:
    func = getattr(stage, "func", stage)  # functools.partial
    return getattr(func, "__qualname__", None) or repr(stage)


def _show(graph: Graph | None, *, meta: bool = True) -> str:
    """The graph as text, or node by node when it holds values the text format refuses."""
    if graph is None:
        return "(no graph)\n"
    try:
        return print_graph(graph, meta=meta)
    except PurequantError:
        return "\n".join(repr(n) for n in graph.nodes.values()) + "\n"
    except Exception as e:  # a corrupted graph may not even walk; say so, do not mask the law
        return f"(cannot print the graph: {type(e).__name__}: {e})\n"


def _indent(text: str) -> str:
    return "".join("    " + line + "\n" for line in text.splitlines())


def _diff(a: str, b: str, first: str, second: str) -> str:
    lines = difflib.unified_diff(a.splitlines(), b.splitlines(), first, second, lineterm="")
    return _indent("\n".join(lines))


def _fail(law: str, stage: Stage, message: str) -> AssertionError:
    return AssertionError(f"law {law!r} fails for stage {_name(stage)}: {message}")


def same_value(a: Any, b: Any) -> bool:
    """Structural equality for records: NaN equals NaN, -0.0 differs from 0.0, True differs
    from 1, and attrs/dataclass fields excluded from equality (timings) are ignored."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (tuple, list, PVector)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if attrs.has(type(a)):
        return all(same_value(getattr(a, f.name), getattr(b, f.name)) for f in attrs.fields(type(a)) if f.eq)
    if dataclasses.is_dataclass(a):
        return all(same_value(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a) if f.compare)
    return bool(a == b)


def _snapshot(graph: Graph) -> tuple[str, tuple, tuple]:
    """What purity compares: the text of a fresh copy (not the graph's caches), the node
    objects along the order, and the objects in the graph's fields."""
    fresh = attrs.evolve(graph)  # a new Graph over the same maps, with empty caches
    return _show(fresh), tuple(fresh.nodes.get(i) for i in fresh.ids()), tuple(getattr(graph, f) for f in _FIELDS)


# --------------------------------------------------------------------------- laws
def check_well_formed(stage: Stage, graph: Graph) -> None:
    """The stage's output graph passes `check_graph` (vacuous for an analysis).

    Raises:
        AssertionError: the input is malformed (a bad test) or the output is, with the
            checker's message (the neighbourhood of the bad node) and the whole output.
    """
    try:
        check_graph(graph)
    except GraphError as e:
        raise AssertionError(f"the input graph is not well-formed, fix the test first: {e}") from None
    out, _ = run_stage(stage, graph)
    if out is None:
        return
    try:
        check_graph(out)
    except GraphError as e:
        raise _fail("well-formed", stage, f"its output is malformed: {e}\n\noutput:\n{_indent(_show(out))}") from None


def check_pure(stage: Stage, graph: Graph) -> None:
    """The stage leaves its input graph unchanged: the same printed text (provenance included),
    the same node objects in the same order, the same maps in its fields.

    Raises:
        AssertionError: with a diff of the input before and after the run.
    """
    text, nodes, fields = _snapshot(graph)
    run_stage(stage, graph)
    text_after, nodes_after, fields_after = _snapshot(graph)
    if text_after != text:
        raise _fail("pure", stage, "it changed its input graph:\n" + _diff(text, text_after, "input before", "input after"))
    # Nodes before fields: a node can only be swapped by swapping the map holding it, and the
    # node is the more useful thing to name.
    for a, b in zip(nodes, nodes_after):
        if a is not b:
            raise _fail("pure", stage, f"it replaced node %{a.id} of its input graph by an equal copy")
    for name, a, b in zip(_FIELDS, fields, fields_after):
        if a is not b:
            raise _fail("pure", stage, f"it replaced the field {name!r} of its input graph")
    if _show(graph) != text:
        raise _fail("pure", stage, "it corrupted the cached order of its input graph:\n"
                    + _diff(text, _show(graph), "input", "input as cached"))


def check_deterministic(stage: Stage, graph: Graph, *, meta: bool = True) -> None:
    """Two runs, on `graph` and on a deep copy of it, give the same output text (ids, fresh-id
    counters and, with `meta`, provenance) and equal records (`same_value`).

    Running on a copy catches results that depend on object identity (`id()`, identity-keyed
    dicts). Set-of-strings iteration order varies only between processes (PYTHONHASHSEED);
    golden files or digests compared across runs catch that.

    Raises:
        AssertionError: with a diff of the two outputs or of the two records.
    """
    twin = copy.deepcopy(graph)
    out1, rec1 = run_stage(stage, graph)
    out2, rec2 = run_stage(stage, twin)
    if (out1 is graph) != (out2 is twin):
        raise _fail("deterministic", stage, "it returned its input object in one run but not the other")
    t1, t2 = _show(out1, meta=meta), _show(out2, meta=meta)
    if t1 != t2:
        raise _fail("deterministic", stage, "two runs gave different graphs:\n" + _diff(t1, t2, "run 1", "run 2"))
    if not same_value(rec1, rec2):
        r1, r2 = pprint.pformat(rec1), pprint.pformat(rec2)
        raise _fail("deterministic", stage, "two runs gave different records:\n" + _diff(r1, r2, "run 1", "run 2"))


def check_noop_identity(stage: Stage, graph: Graph) -> None:
    """On a graph it has nothing to do on, the stage returns the very same Graph object.

    Raises:
        AssertionError: it returned a new (equal or changed) graph, or none.
    """
    out, _ = run_stage(stage, graph)
    if out is graph:
        return
    if out is None:
        raise _fail("no-op identity", stage, "it returned no graph")
    before, after = _show(graph), _show(out)
    if before == after:
        raise _fail("no-op identity", stage, "it returned a new graph equal to its input; with nothing "
                    "to do a stage returns the very same object (callers test `out is graph`)")
    raise _fail("no-op identity", stage, "it changed a graph it had nothing to do on:\n"
                + _diff(before, after, "input", "output"))


def check_idempotent(stage: Stage, graph: Graph, *, same_object: bool = True) -> None:
    """Running the stage on its own output changes nothing.

    Args:
        stage: the stage.
        graph: its first input.
        same_object: also require the second run to return its input object (the no-op law
            applied to the first output).

    Raises:
        AssertionError: with a diff of the first and second outputs.
    """
    once, _ = run_stage(stage, graph)
    if once is None:
        raise _fail("idempotent", stage, "it returned no graph")
    twice, _ = run_stage(stage, once)
    t1, t2 = _show(once), _show(twice)
    if t1 != t2:
        raise _fail("idempotent", stage, "a second run changed its output:\n" + _diff(t1, t2, "once", "twice"))
    if same_object and twice is not once:
        raise _fail("idempotent", stage, "a second run had nothing to do but returned a new graph")


def check_laws(stage: Stage, graph: Graph, *, idempotent: bool = False) -> None:
    """Well-formed, pure and deterministic (and idempotent when asked) in one call."""
    check_well_formed(stage, graph)
    check_pure(stage, graph)
    check_deterministic(stage, graph)
    if idempotent:
        check_idempotent(stage, graph)

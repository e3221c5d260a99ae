"""Properties of observer insertion on random hand-built graphs.

A graph is generated as a plain-data recipe (ops whose inputs are look-back offsets to earlier
values, each with a qconfig name) and built by a pure function, so it is acyclic by
construction and shrinks to tiny graphs. For each: the observed graph is well-formed, removing
every `purequant.observe` node gives back the input graph exactly, both edit strategies agree,
and no value is observed twice.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from pyrsistent import pmap

from purequant.ir import Graph, GraphBuilder, ModuleSpec, Ref, check_graph, print_graph
from purequant.patterns import default_table
from purequant.stages import insert_observers as io
from purequant.stages.find_matches import find_matches
from purequant.stages.find_quants import QuantPlan, ValueQuant, find_quants
from purequant.stages.insert_observers import insert_observers, is_observer

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from quant_testkit import ACT, QCONFIGS  # noqa: E402

MODULES = {"conv": "torch.nn.Conv2d", "bn": "torch.nn.BatchNorm2d", "relu": "torch.nn.ReLU",
           "pool": "torch.nn.MaxPool2d", "tanh": "torch.nn.Tanh", "fc": "torch.nn.Linear"}
UNARY = {"relu_f": "torch.nn.functional.relu", "sigmoid": "torch.sigmoid", "silu": "torch.nn.functional.silu",
         "flatten": "torch.flatten"}
KINDS = [*MODULES, *UNARY, "add", "add_scalar", "cat", "view", "size_add", "linear_f"]
QC_NAMES = ["static", "static", "static", "none", "other", "qint8", "dynamic", "reuse"]

ops = st.tuples(
    st.sampled_from(KINDS), st.integers(1, 4), st.integers(1, 4), st.sampled_from(QC_NAMES)
)
recipes = st.tuples(st.lists(ops, min_size=1, max_size=25), st.sets(st.integers(1, 6), max_size=3))


def build(recipe) -> tuple[Graph, dict, dict]:
    """The graph, ModuleSpecs and qconfig map of a recipe. Pure."""
    steps, extra_outputs = recipe
    b = GraphBuilder()
    values = [b.emit("placeholder", "x", prefix="x")]
    modules, qconfigs = {}, {}
    for i, (kind, back, back2, qc) in enumerate(steps):
        a = values[-min(back, len(values))]
        c = values[-min(back2, len(values))]
        ref = _emit(b, kind, i, a, c, modules)
        qconfigs[ref.id] = QCONFIGS[qc]
        values.append(ref)
    outs = {values[-1].id: None}
    outs.update({values[-min(k, len(values))].id: None for k in sorted(extra_outputs)})
    b.emit("output", "output", (tuple(Ref(i) for i in outs),))
    return b.finish(), modules, qconfigs


def _emit(b: GraphBuilder, kind: str, i: int, a: Ref, c: Ref, modules: dict) -> Ref:
    if kind in MODULES:
        modules[f"{kind}{i}"] = ModuleSpec(MODULES[kind])
        return b.emit("call_module", f"{kind}{i}", (a,), prefix=kind)
    if kind in UNARY:
        return b.emit("call_function", UNARY[kind], (a,), prefix=kind)
    if kind == "add":
        return b.emit("call_function", "operator.add", (a, c), prefix="add")
    if kind == "add_scalar":
        return b.emit("call_function", "torch.add", (a, 1.0), prefix="add")
    if kind == "cat":
        return b.emit("call_function", "torch.cat", ((a, c), 1), prefix="cat")
    if kind == "view":
        return b.emit("call_method", "view", (a, -1), prefix="view")
    if kind == "size_add":
        s = b.emit("call_method", "size", (a, 0), prefix="size")
        return b.emit("call_function", "operator.add", (s, 1), prefix="add")
    w = b.emit("get_attr", f"w{i}", prefix="w")
    return b.emit("call_function", "torch.nn.functional.linear", (a, w), prefix="linear")


def strip_observers(graph: Graph) -> Graph:
    """The graph without observer nodes, each reader reconnected to the observed value."""
    rename: dict[str, str] = {}
    nodes = []
    for n in graph.node_list():
        if is_observer(n):
            rename[n.id] = n.args[0].id
        else:
            nodes.append(n.map_refs(lambda i: Ref(rename.get(i, i))) if rename else n)
    return Graph.from_nodes(nodes)


def _observed(recipe):
    g, modules, qconfigs = build(recipe)
    plan = find_quants(g, find_matches(g, modules, default_table("x86"), qconfigs))
    return g, plan, insert_observers(g, plan)


@settings(max_examples=200, deadline=None)
@given(recipes)
def test_observed_graph_is_well_formed_and_strips_back_to_the_input(recipe):
    g, plan, (observed, rec) = _observed(recipe)
    before = print_graph(g)
    check_graph(observed)
    stripped = strip_observers(observed)
    assert stripped == g
    assert print_graph(stripped) == before == print_graph(g)  # meta kept; input unchanged
    if not rec.slots:
        assert observed is g


@settings(max_examples=200, deadline=None)
@given(recipes)
def test_one_observer_per_value_never_on_an_observer(recipe):
    g, plan, (observed, rec) = _observed(recipe)
    assert len(observed) == len(g) + len(rec.slots)
    for oid, slot in rec.slots.items():
        assert not is_observer(observed.node(slot.value_id))
        assert observed.users(slot.value_id) == (oid,) and observed.next[slot.value_id] == oid
    assert set(rec.shares) & {s.value_id for s in rec.slots.values()} == set()
    assert set(rec.shares.values()) <= set(rec.slots)
    assert not rec.skipped


@settings(max_examples=100, deadline=None)
@given(recipes, st.data())
def test_any_plan_local_edits_equal_sweep(recipe, data):
    g, _, _ = build(recipe)
    values = [i for i in g.ids() if g.nodes[i].op != "output"]
    chosen = data.draw(st.lists(st.sampled_from(values), unique=True))
    plan = QuantPlan(pmap({v: ValueQuant(ACT, False, "output", v) for v in chosen}), pmap(), pmap(), pmap(), pmap())
    todo, _, _ = io._todo(g, plan)
    local, ids_l = io._by_local_edits(g, todo)
    sweep, ids_s = io._by_sweep(g, todo)
    assert local == sweep and ids_l == ids_s and print_graph(local) == print_graph(sweep)
    check_graph(local)
    assert strip_observers(local) == g
    # Observing the observed graph again inserts nothing.
    again, rec = insert_observers(local, QuantPlan(pmap({**{v: plan.observe[v] for v in chosen}, **{o: plan.observe[v] for v, o in ids_l.items()}}), pmap(), pmap(), pmap(), pmap()))
    assert again is local and not rec.slots

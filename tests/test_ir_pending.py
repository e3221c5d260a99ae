"""A builder-made graph keeps its persistent maps pending (ir.graph.Pending) until first read:
nothing about it may differ from a graph whose maps were built up front."""

from __future__ import annotations

import copy
import pickle

import attrs
import pytest
from pyrsistent import PMap

from purequant.errors import GraphError
from purequant.ir import Graph, GraphBuilder, Node, Ref, check_graph, digest, print_graph
from purequant.ir.graph import TABLES, Pending


def _built() -> Graph:
    b = GraphBuilder()
    x = b.add(Node("x", "placeholder", "x"))
    r = b.add(Node("relu", "call_function", "torch.relu", (x,)))
    a = b.add(Node("add", "call_function", "operator.add", (r, x), meta={"src": "m.py:3"}))
    b.add(Node("output", "output", "output", (a,)))
    return b.finish()


def _eager(g: Graph) -> Graph:
    """The same graph with every map built, through the public constructor."""
    return Graph(*(getattr(g, name) for name in TABLES), g.head, g.tail, g.counters)


def test_pending_until_read_then_built_once():
    g = _built()
    assert all(isinstance(getattr(g, "_" + name), Pending) for name in TABLES)
    assert len(g) == 4 and "relu" in g and g.node("add").args == (Ref("relu"), Ref("x"))
    assert g.users("x") == ("relu", "add") and g.ids() == ("x", "relu", "add", "output")
    assert isinstance(g._nodes, Pending)  # queries read the tables, not the maps
    first = g.nodes
    assert isinstance(first, PMap) and g.nodes is first and dict(first) == dict(g.table("nodes"))


def test_same_value_as_a_graph_built_up_front():
    g = _built()
    e = _eager(_built())
    assert g == e and hash(g) == hash(e)
    assert print_graph(g) == print_graph(e) and digest(g) == digest(e) and digest(g, canonical=False) == digest(e, canonical=False)
    for name in TABLES:
        assert getattr(_built(), name) == getattr(e, name)
    check_graph(_built())


def test_copies_evolve_and_pickle_keep_pending_maps_working():
    g = _built()
    for other in (copy.deepcopy(g), pickle.loads(pickle.dumps(g)), attrs.evolve(g), copy.copy(g)):
        assert other == g and print_graph(other) == print_graph(g)
        assert other.users_map == g.users_map and other.pos == g.pos
    stale = attrs.evolve(_built(), pos=_built().pos.remove("add"))  # an explicit field wins
    with pytest.raises(GraphError, match="no position key"):
        check_graph(stale)


def test_local_edits_on_a_pending_graph_equal_edits_on_a_built_one():
    def edit(g: Graph) -> Graph:
        g = g.insert_after("relu", Node("obs", "call_function", "observe", (Ref("relu"),)))
        g = g.replace_all_uses("relu", "obs", skip=("obs",))
        return g.update("add", args=(Ref("obs"), Ref("obs")))

    pending, eager = edit(_built()), edit(_eager(_built()))
    assert pending == eager and print_graph(pending) == print_graph(eager)
    for name in TABLES:
        assert getattr(pending, name) == getattr(eager, name)
    check_graph(pending)

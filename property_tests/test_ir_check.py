"""check_graph rejects corrupted graphs, built by `attrs.evolve`-ing a valid graph's maps past
the edit API, with a GraphError that shows the bad node's neighbourhood (the `>>` marker)."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from purequant.errors import GraphError
from purequant.ir import Graph, Node, Ref, check_graph
from purequant.testing.strategies import graphs

SETTINGS = settings(max_examples=30, deadline=None)
small_graphs = graphs(min_ops=1, max_ops=6)


def _rejects(graph: Graph) -> GraphError:
    with pytest.raises(GraphError) as e:
        check_graph(graph)
    assert ">> %" in str(e.value), str(e.value)
    return e.value


@SETTINGS
@given(small_graphs, st.data())
def test_broken_order_links(graph, data):
    ids = graph.ids()
    k = data.draw(st.integers(1, len(ids) - 1), label="k")
    kind = data.draw(st.sampled_from(["wrong prev", "skip", "cycle", "unknown"]), label="kind")
    if kind == "wrong prev":
        wrong = data.draw(st.sampled_from([i for i in ids if i != ids[k - 1]]))
        bad = attrs.evolve(graph, prev=graph.prev.set(ids[k], wrong))
    elif kind == "skip":  # ids[k-1] jumps over ids[k]
        assume(k + 1 < len(ids))
        bad = attrs.evolve(graph, next=graph.next.set(ids[k - 1], ids[k + 1]))
    elif kind == "cycle":  # the tail leads back into the list
        bad = attrs.evolve(graph, next=graph.next.set(ids[-1], ids[k - 1]))
    else:
        bad = attrs.evolve(graph, next=graph.next.set(ids[k - 1], "ghost"))
    _rejects(bad)


@SETTINGS
@given(small_graphs, st.data())
def test_stale_users_index(graph, data):
    ids = graph.ids()
    nid = data.draw(st.sampled_from(ids[:-1]), label="nid")
    users = graph.users_map[nid]
    if users and data.draw(st.booleans(), label="drop"):
        stale = users[1:]  # forget a reader
    else:
        stranger = data.draw(st.sampled_from([i for i in ids if i not in users]), label="stranger")
        stale = (*users, stranger)  # claim a reader that does not read it
    err = _rejects(attrs.evolve(graph, users_map=graph.users_map.set(nid, stale)))
    assert "users index" in str(err)


@SETTINGS
@given(small_graphs, st.data())
def test_use_before_definition(graph, data):
    ids = graph.ids()
    k = data.draw(st.integers(0, len(ids) - 2), label="k")
    later = data.draw(st.sampled_from(ids[k:]), label="later")  # itself or after it
    node = graph.node(ids[k])
    bad_node = Node(node.id, node.op, node.target, (*node.args, Ref(later)), node.kwargs)
    err = _rejects(attrs.evolve(graph, nodes=graph.nodes.set(node.id, bad_node)))
    assert f"%{node.id} reads %{later}, which is not defined before it" in str(err)


@SETTINGS
@given(small_graphs, st.data())
def test_two_outputs(graph, data):
    ids = graph.ids()
    nid = data.draw(st.sampled_from(ids[:-1]), label="nid")
    assume(not graph.users_map[nid])  # an output with readers would fail for another reason
    node = graph.node(nid)
    bad = attrs.evolve(graph, nodes=graph.nodes.set(nid, Node(nid, "output", "output", node.args, node.kwargs)))
    err = _rejects(bad)
    assert "expected exactly one output node, last; found 2" in str(err)

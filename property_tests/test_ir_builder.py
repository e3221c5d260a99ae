"""The builder (transient, whole-graph) agrees with Graph.from_nodes and with local appends,
and refuses what would make a bad graph: forward references and use after finish()."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from purequant.errors import GraphError
from purequant.ir import Graph, GraphBuilder, Node, print_graph
from purequant.testing.strategies import graphs

SETTINGS = settings(max_examples=50, deadline=None)
small_graphs = graphs(max_ops=8)


@SETTINGS
@given(small_graphs)
def test_builder_equals_from_nodes_and_local_appends(graph):
    b = GraphBuilder()
    for node in graph.node_list():
        b.add(node)
    built = b.finish()
    _refuses_use_after_finish(b)
    from_nodes = Graph.from_nodes(graph.node_list())
    appended = Graph()
    for node in graph.node_list():
        appended = appended.append(node)
    for other in (from_nodes, appended):
        assert built == other
        assert print_graph(built) == print_graph(other)
        assert built.counters == other.counters
        assert all(built.users(i) == other.users(i) for i in built.ids())


@SETTINGS
@given(small_graphs, st.lists(st.sampled_from(["add", "relu", "x", "output", "a_1_5", "conv1"]), max_size=6))
def test_builder_fresh_ids_are_new_to_the_graph_it_was_seeded_from(graph, prefixes):
    b = graph.builder()
    fresh = [b.fresh_id(p) for p in prefixes]
    assert len(set(fresh)) == len(fresh)
    assert not set(fresh) & set(graph.ids())


@SETTINGS
@given(small_graphs, st.data())
def test_builder_rejects_forward_references(graph, data):
    nodes = list(graph.node_list())
    readers = [k for k, n in enumerate(nodes) if n.input_ids()]
    assume(readers)
    k = data.draw(st.sampled_from(readers))
    first_input = min(i for i, n in enumerate(nodes) if n.id in nodes[k].input_ids())
    # Move the reader to just before its earliest input.
    moved = nodes[:first_input] + [nodes[k]] + [n for i, n in enumerate(nodes[first_input:], first_input) if i != k]
    b = GraphBuilder()
    for n in moved[: first_input]:
        b.add(n)
    with pytest.raises(GraphError, match=f"%{nodes[k].id} reads %.*, which was not added before it"):
        b.add(nodes[k])


def _refuses_use_after_finish(b: GraphBuilder) -> None:
    with pytest.raises(GraphError, match="already finished"):
        b.add(Node(b.fresh_id("late"), "placeholder", "late"))
    with pytest.raises(GraphError, match="already finished"):
        b.emit("call_function", "torch.relu", ())
    with pytest.raises(GraphError, match="already finished"):
        b.finish()

"""Properties of the text format and the canonical digest over random graphs.

NaN: `Node` equality compares argument tuples, and Python compares floats inside tuples by
identity first and IEEE `==` second, so a node holding `float("nan")` equals only a node holding
that very object; attrs-generated `__eq__` (of `Slice`) has no identity shortcut, so a `Slice`
with a NaN bound equals nothing, not even itself. A parsed graph holds new NaN objects, so
`parse(print(g)) == g` is false for a graph with a NaN constant although nothing was lost. We
therefore test: the printed text round-trips exactly (the primary property: the text is what
dumps, goldens and replay use); every node round-trips under a NaN-aware, type-aware
structural equality (`same_value`: NaN equals NaN, -0.0 differs from 0.0, True differs from 1);
and `==` holds for graphs without NaN.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from purequant.ir import (
    Graph,
    Node,
    Ref,
    canonicalize,
    check_graph,
    digest,
    parse_graph,
    print_graph,
)
from purequant.testing.laws import same_value
from purequant.testing.strategies import graphs

SETTINGS = settings(max_examples=80, deadline=None)
weird_graphs = graphs(weird=True, max_ops=8)
small_graphs = graphs(max_ops=8)


@SETTINGS
@given(weird_graphs)
def test_text_round_trip(graph):
    # One test for the round-trip properties, so each costly graph is drawn once.
    text = print_graph(graph)
    parsed = parse_graph(text)
    assert print_graph(parsed) == text, "print -> parse -> print is not exact"
    check_graph(parsed)
    assert parsed.ids() == graph.ids()
    for a, b in zip(graph.node_list(), parsed.node_list()):
        assert (a.id, a.op, a.target) == (b.id, b.op, b.target)
        assert same_value(a.args, b.args), (a, b)
        assert same_value(a.kwargs, b.kwargs), (a, b)
        assert same_value(a.meta, b.meta), ("meta lost", a.meta, b.meta)
    if "nan" not in text:
        assert parsed == graph
    # The id counters survive too, so a parsed graph hands out the same fresh ids (replay).
    assert parsed.counters == graph.counters
    for prefix in ("add", "relu", "x", "output", "conv1"):
        assert parsed.fresh_id(prefix) == graph.fresh_id(prefix)


@SETTINGS
@given(weird_graphs, st.data())
def test_text_round_trip_after_edits(graph, data):
    # Erasing nodes makes counters differ from what the ids imply (the `#! ids:` header).
    for _ in range(data.draw(st.integers(0, 3))):
        unused = [n.id for n in graph.node_list() if n.op != "output" and not graph.users(n.id)]
        if not unused:
            break
        graph = graph.erase(data.draw(st.sampled_from(unused)))
    text = print_graph(graph)
    parsed = parse_graph(text)
    assert print_graph(parsed) == text
    assert parsed.counters == graph.counters
    assert parsed.fresh_id("relu") == graph.fresh_id("relu")


@st.composite
def renamed(draw):
    """A graph and a copy with every id consistently renamed (placeholder targets kept: they
    are the signature, not names)."""
    graph = draw(small_graphs)
    ids = graph.ids()
    # A shuffled numbering under a drawn stem: cheap to draw, and it moves names across nodes.
    stem = draw(st.sampled_from(["n", "v", "x_", "add_", "output"]))
    new = [f"{stem}{k}" for k in draw(st.permutations(range(len(ids))))]
    rename = dict(zip(ids, new))
    nodes = [n.map_refs(lambda i: Ref(rename[i])) for n in graph.node_list()]
    nodes = [Node(rename[n.id], n.op, n.target, n.args, n.kwargs, n.meta) for n in nodes]
    return graph, Graph.from_nodes(nodes)


@SETTINGS
@given(renamed())
def test_digest_is_invariant_under_renaming(pair):
    graph, other = pair
    assert digest(other) == digest(graph)
    assert print_graph(canonicalize(other)) == print_graph(canonicalize(graph))


@SETTINGS
@given(small_graphs)
def test_canonical_form_is_a_fixed_point_and_well_formed(graph):
    canon = canonicalize(graph)
    check_graph(canon)
    assert print_graph(canonicalize(canon)) == print_graph(canon)
    assert digest(canon) == digest(graph)

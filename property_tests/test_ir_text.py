"""Properties of the text format and the canonical digest over random graphs.

NaN: `Node` equality compares argument tuples, and Python compares floats inside tuples by
identity first and IEEE `==` second, so a node holding `float("nan")` equals only a node holding
that very object. The parser gives back `math.nan`, so `parse(print(g)) == g` is false for a
graph with a NaN constant that is not `math.nan` itself, although nothing was lost. We therefore
test three things: the printed text round-trips exactly (the primary property; the text is what
dumps, goldens and replay use), every node round-trips under a NaN-aware, type-aware structural
equality (`same_value`: NaN equals NaN, -0.0 differs from 0.0, True differs from 1), and
`==` holds once the original's NaNs are replaced by the parser's `math.nan`.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from pyrsistent import PMap, PVector, pmap, pvector

from purequant.ir import (
    Graph,
    Node,
    Ref,
    Slice,
    canonicalize,
    check_graph,
    digest,
    parse_graph,
    print_graph,
)
from purequant.testing.laws import same_value
from purequant.testing.strategies import graphs

SETTINGS = settings(max_examples=100, deadline=None)
weird_graphs = graphs(weird=True, max_ops=8)
small_graphs = graphs(max_ops=8)


def _nan_as_parsed(value):
    """`value` with every NaN replaced by `math.nan`, the object the parser returns."""
    t = type(value)
    if t is float and math.isnan(value):
        return math.nan
    if t is tuple:
        return tuple(_nan_as_parsed(v) for v in value)
    if isinstance(value, PVector):
        return pvector(_nan_as_parsed(v) for v in value)
    if isinstance(value, PMap):
        return pmap({k: _nan_as_parsed(v) for k, v in value.items()})
    if t is Slice:
        return Slice(*(_nan_as_parsed(v) for v in (value.start, value.stop, value.step)))
    return value


def _with_parsed_nans(graph: Graph) -> Graph:
    nodes = [
        Node(n.id, n.op, n.target, _nan_as_parsed(n.args), _nan_as_parsed(n.kwargs), n.meta)
        for n in graph.node_list()
    ]
    return Graph.from_nodes(nodes, counters=dict(graph.counters))


@SETTINGS
@given(weird_graphs)
def test_print_parse_print_is_exact(graph):
    text = print_graph(graph)
    assert print_graph(parse_graph(text)) == text


@SETTINGS
@given(weird_graphs)
def test_parse_gives_back_every_node_and_its_meta(graph):
    parsed = parse_graph(print_graph(graph))
    check_graph(parsed)
    assert parsed.ids() == graph.ids()
    for a, b in zip(graph.node_list(), parsed.node_list()):
        assert (a.id, a.op, a.target) == (b.id, b.op, b.target)
        assert same_value(a.args, b.args), (a, b)
        assert same_value(a.kwargs, b.kwargs), (a, b)
        assert same_value(a.meta, b.meta), (a.meta, b.meta)
    assert parsed.counters == graph.counters
    assert parsed == _with_parsed_nans(graph)


@SETTINGS
@given(weird_graphs)
def test_parsed_graph_hands_out_the_same_fresh_ids(graph):
    parsed = parse_graph(print_graph(graph))
    for prefix in ("add", "relu", "x", "output", "conv1"):
        assert parsed.fresh_id(prefix) == graph.fresh_id(prefix)


@st.composite
def renamed(draw):
    """A graph and a copy with every id consistently renamed (placeholder targets kept: they
    are the signature, not names)."""
    graph = draw(small_graphs)
    ids = graph.ids()
    new = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
                        min_size=len(ids), max_size=len(ids), unique=True))
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

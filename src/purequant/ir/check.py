"""Well-formedness of a Graph, with errors that show the neighbourhood of the bad node."""

from __future__ import annotations

from ..errors import GraphError
from .graph import Graph
from .node import ID_RE, is_valid_op
from .text import format_node

CONTEXT = 3


def neighbourhood(graph: Graph, nid: str | None, *, context: int = CONTEXT) -> str:
    """The graph printed `context` nodes around `nid`, with a marker on it."""
    ids = graph.ids() if _order_ok(graph) else tuple(graph.nodes)
    if nid not in ids:
        return ""
    k = ids.index(nid)
    lines = []
    for j in range(max(0, k - context), min(len(ids), k + context + 1)):
        mark = ">> " if j == k else "   "
        lines.append(mark + format_node(graph.nodes[ids[j]]))
    return "\n".join(lines)


def _order_ok(graph: Graph) -> bool:
    seen, nid = 0, graph.head
    while nid is not None and seen <= len(graph.nodes):
        if nid not in graph.nodes:  # else neighbourhood() would fail on it with a KeyError
            return False
        seen, nid = seen + 1, graph.next.get(nid)
    return seen == len(graph.nodes) and nid is None


def _fail(graph: Graph, nid: str | None, message: str) -> GraphError:
    where = neighbourhood(graph, nid)
    return GraphError(message + ("\n" + where if where else ""), node_id=nid)


def _check_order(graph: Graph) -> tuple[str, ...]:
    # Plain-dict tables (Graph.table): this loop does several lookups per node, and a dict
    # lookup is ~30x cheaper than a PMap one. The tables hold exactly the maps' entries.
    nodes, prev_of, next_of, pos = (graph.table(t) for t in ("nodes", "prev", "next", "pos"))
    order: list[str] = []
    seen: set[str] = set()
    nid, prev = graph.head, None
    while nid is not None:
        if nid in seen or nid not in nodes:
            raise _fail(graph, prev, f"order is broken after %{prev}: reaches {nid!r} again or an unknown id")
        if prev_of.get(nid) != prev:
            raise _fail(graph, nid, f"prev link of %{nid} is {prev_of.get(nid)!r}, expected {prev!r}")
        if nid not in pos:
            raise _fail(graph, nid, f"%{nid} has no position key")
        if prev is not None and pos[prev] >= pos[nid]:
            raise _fail(graph, nid, f"position keys do not increase at %{nid}")
        order.append(nid)
        seen.add(nid)
        prev, nid = nid, next_of.get(nid)
    if prev != graph.tail or len(order) != len(nodes):
        raise _fail(graph, prev, f"order covers {len(order)} of {len(nodes)} nodes")
    return tuple(order)


def check_graph(graph: Graph) -> Graph:
    """Raise GraphError unless `graph` is well-formed; return it unchanged otherwise.

    Checks: the order covers every node once with consistent links and increasing positions;
    ids are identifiers equal to their keys; ops are valid; every edge reads a node defined
    earlier; the users index equals the edges; exactly one output node, and it is last.
    O(n + edges), once per graph value: a graph never changes, so a passed check is
    remembered on it and later calls are O(1) (the runner checks each stage's output, which is
    the next stage's input).
    """
    if graph._cache.get("checked"):
        return graph
    order = _check_order(graph)
    nodes, users_map = graph.table("nodes"), graph.table("users_map")
    defined: set[str] = set()
    users: dict[str, set[str]] = {nid: set() for nid in order}
    outputs = 0
    match = ID_RE.match
    for nid in order:
        node = nodes[nid]
        if node.id != nid or not match(nid):
            raise _fail(graph, nid, f"node stored under {nid!r} has id {node.id!r}")
        if not is_valid_op(node.op):
            raise _fail(graph, nid, f"%{nid} has unknown op {node.op!r}")
        for i in node.input_ids():
            if i not in defined:
                raise _fail(graph, nid, f"%{nid} reads %{i}, which is not defined before it")
            users[i].add(nid)
        outputs += node.op == "output"
        defined.add(nid)
    for nid in order:
        have = users_map.get(nid, ())
        if len(have) != len(users[nid]) or set(have) != users[nid]:
            raise _fail(graph, nid, f"users index of %{nid} is {sorted(have)}, edges say {sorted(users[nid])}")
    if len(users_map) != len(order):
        raise _fail(graph, None, "users index has entries for ids not in the graph")
    if outputs != 1 or nodes[order[-1]].op != "output":
        raise _fail(graph, order[-1] if order else None, f"expected exactly one output node, last; found {outputs}")
    graph._cache["checked"] = True
    return graph

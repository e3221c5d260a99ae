"""A transient builder for stages that rewrite every node.

Plain dicts and a list while building (O(1) per node), frozen into a Graph by `finish()` in one
O(n) pass. A builder is local to the stage that made it and must never escape it: after
`finish()` it refuses further use, so no one can mutate a graph through a builder they kept.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from pyrsistent import pmap

from ..errors import GraphError
from .graph import GAP, TABLES, Graph, Pending
from .names import next_free, sanitize, split_id
from .node import ID_RE, Node, Ref, is_valid_op


class GraphBuilder:
    """Append-only construction of a Graph; inputs must be added before their readers."""

    __slots__ = ("_nodes", "_order", "_counters", "_done")

    def __init__(self, counters: dict[str, int] | None = None) -> None:
        self._nodes: dict[str, Node] = {}
        self._order: list[str] = []
        self._counters: dict[str, int] = dict(counters or {})
        self._done = False

    def __contains__(self, nid: object) -> bool:
        return nid in self._nodes

    def __len__(self) -> int:
        return len(self._order)

    def node(self, nid: str) -> Node:
        return self._nodes[nid]

    def fresh_id(self, prefix: str) -> str:
        """Reserve and return an id unused in this build (and the graph it was seeded from)."""
        base = sanitize(prefix)
        nid = next_free(base, self._counters.get(base), self._nodes)
        b, k = split_id(nid)
        self._counters[b] = max(self._counters.get(b, -1), k)
        return nid

    def add(self, node: Node) -> Ref:
        """Append `node`; every Ref it holds must already be in the builder. O(args)."""
        if self._done:
            raise GraphError("this GraphBuilder was already finished; start a new one")
        nid = node.id
        if nid in self._nodes:
            raise GraphError(f"id {nid!r} added twice", node_id=nid, hint="use builder.fresh_id(prefix)")
        if not ID_RE.match(nid):
            raise GraphError(f"bad node id {nid!r}: ids are identifiers", node_id=nid)
        if not is_valid_op(node.op):
            raise GraphError(f"bad op {node.op!r}", node_id=nid)
        for i in node.input_ids():
            if i not in self._nodes:
                raise GraphError(f"%{nid} reads %{i}, which was not added before it", node_id=nid)
        self._nodes[nid] = node
        self._order.append(nid)
        base, k = split_id(nid)
        if self._counters.get(base, -1) < k:
            self._counters[base] = k
        return Ref(nid)

    def emit(
        self,
        op: str,
        target: str,
        args: tuple = (),
        kwargs: dict[str, Any] | None = None,
        *,
        prefix: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Ref:
        """Create a node with a fresh id from `prefix` (default: the target's last part)."""
        nid = self.fresh_id(prefix or target.rsplit(".", 1)[-1])
        return self.add(Node(nid, op, target, args, pmap(kwargs or {}), pmap(meta or {})))

    def finish(self) -> Graph:
        """Freeze into a Graph. O(n + edges). The builder cannot be used afterwards."""
        if self._done:
            raise GraphError("this GraphBuilder was already finished")
        self._done = True
        order, nodes = self._order, self._nodes
        users: dict[str, list[str]] = {nid: [] for nid in order}
        for nid in order:
            for i in nodes[nid].input_ids():
                users[i].append(nid)
        users_t = {k: tuple(v) for k, v in users.items()}
        prev = dict(zip(order[1:], order))
        nxt = dict(zip(order, order[1:]))
        pos = {nid: (k + 1) * GAP for k, nid in enumerate(order)}
        # The persistent maps stay pending until something reads them (see ir.graph.Pending),
        # and the order and plain-dict tables are known here: seed the graph's caches with them
        # (Graph.ids, Graph.table). The dicts are not shared with anything that could change
        # them: this builder is done.
        tables: tuple[dict[str, Any], ...] = (nodes, users_t, prev, nxt, pos)
        graph = Graph(
            Pending(nodes), Pending(users_t), Pending(prev), Pending(nxt), Pending(pos),
            order[0] if order else None,
            order[-1] if order else None,
            pmap(self._counters),
        )
        graph._cache.update({name + "_t": MappingProxyType(t) for name, t in zip(TABLES, tables)})
        graph._cache["ids"] = tuple(order)
        return graph

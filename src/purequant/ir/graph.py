"""The persistent graph: nodes, users index and order, all in persistent maps.

Design (measured, see docs/benchmarks.md): order is a persistent doubly-linked list (`prev` and
`next` maps, like fx's `_prev/_next`) so a local insert or erase touches O(1) entries, each an
O(log32 n) persistent-map update. Every node also has an integer position key (`pos`) with wide
gaps, so "is a before b" and users-of in graph order are O(log n) without walking the list; a
key space exhausted by repeated inserts at one spot is renumbered once (amortised O(1)).

A Graph is a value: every edit returns a new Graph sharing structure with the old one, and the
old one is unchanged. Whole-graph rewrites go through `GraphBuilder` (builder.py) instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from attrs import field, frozen
from pyrsistent import PMap, pmap

from ..errors import GraphError
from .names import derive_counters, next_free, sanitize, split_id
from .node import ID_RE, Node, Ref, is_valid_op

GAP = 1 << 32
_EMPTY: PMap = pmap()
TABLES = ("nodes", "users_map", "prev", "next", "pos")
_FIELDS = (*TABLES, "head", "tail", "counters")


class Pending:
    """A persistent map of a Graph that is not built yet: the plain dict it is built from.

    `GraphBuilder.finish` hands its dicts over like this. Sweeps read a graph through its
    tables (`Graph.table`, node, users, ids), so most graphs a stage builds are never edited
    locally and never need the persistent maps: five `pmap()` calls per graph (20 ms at 10k
    nodes) and ~10 GC-tracked objects per node saved. The map is built from the dict on first
    use of the field, and the dict is never changed (the builder that made it is finished).
    """

    __slots__ = ("table",)

    def __init__(self, table: dict) -> None:
        self.table = table


@frozen(slots=True, eq=False)
class Graph:
    """An immutable sequence of nodes with O(log n) lookup, users-of and local edits.

    Equality compares nodes (without provenance) and their order; derived indexes (users,
    positions) and id counters are not part of it.

    The five maps are the properties `nodes`, `users_map`, `prev`, `next` and `pos`; a field
    may hold a `Pending` dict until first read (see Pending), which changes nothing visible.
    """

    _nodes: PMap | Pending = field(default=_EMPTY, alias="nodes")  # id -> Node
    _users_map: PMap | Pending = field(default=_EMPTY, alias="users_map")  # id -> user ids (any order)
    _prev: PMap | Pending = field(default=_EMPTY, alias="prev")  # id -> previous id
    _next: PMap | Pending = field(default=_EMPTY, alias="next")  # id -> next id
    _pos: PMap | Pending = field(default=_EMPTY, alias="pos")  # id -> int key, increasing along the order
    head: str | None = None
    tail: str | None = None
    counters: PMap = _EMPTY  # base name -> highest suffix ever used
    _cache: dict = field(factory=dict, init=False, repr=False)

    # ------------------------------------------------------------------- maps
    @property
    def nodes(self) -> PMap:
        m = self._nodes
        return self._build("_nodes", m) if isinstance(m, Pending) else m

    @property
    def users_map(self) -> PMap:
        m = self._users_map
        return self._build("_users_map", m) if isinstance(m, Pending) else m

    @property
    def prev(self) -> PMap:
        m = self._prev
        return self._build("_prev", m) if isinstance(m, Pending) else m

    @property
    def next(self) -> PMap:
        m = self._next
        return self._build("_next", m) if isinstance(m, Pending) else m

    @property
    def pos(self) -> PMap:
        m = self._pos
        return self._build("_pos", m) if isinstance(m, Pending) else m

    def _build(self, slot: str, pending: Pending) -> PMap:
        m = pmap(pending.table)
        object.__setattr__(self, slot, m)  # the same value, built once: the graph stays a value
        return m

    def _raw(self) -> dict[str, Any]:
        """The fields as constructor arguments, pending maps left pending."""
        return {"nodes": self._nodes, "users_map": self._users_map, "prev": self._prev,
                "next": self._next, "pos": self._pos, "head": self.head, "tail": self.tail,
                "counters": self.counters}

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        m = self._nodes
        return len(m.table if isinstance(m, Pending) else m)

    def __contains__(self, nid: object) -> bool:
        t = self._cache.get("nodes_t")
        return nid in (self.nodes if t is None else t)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.node_list())

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Graph):
            return NotImplemented
        return self.ids() == other.ids() and self.table("nodes") == other.table("nodes")

    def __hash__(self) -> int:
        h = self._cache.get("hash")
        if h is None:
            h = self._cache["hash"] = hash(self.node_list())
        return h

    def __repr__(self) -> str:
        return f"<Graph {len(self)} nodes, head={self.head!r}, tail={self.tail!r}>"

    # Pickling and copying carry the fields only: the caches are derived data (and the tables
    # are read-only views, which do not pickle); a copy recomputes what it needs.
    def __getstate__(self) -> dict[str, Any]:
        return self._raw()

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in _FIELDS:
            object.__setattr__(self, "_" + name if name in TABLES else name, state[name])
        object.__setattr__(self, "_cache", {})

    def node(self, nid: str) -> Node:
        """The node with id `nid`; GraphError naming the id if there is none. O(log n)."""
        t = self._cache.get("nodes_t")
        node = (self.nodes if t is None else t).get(nid)
        if node is None:
            raise GraphError(f"no node with id {nid!r} in this graph", node_id=nid)
        return node

    def get(self, nid: str) -> Node | None:
        t = self._cache.get("nodes_t")
        return (self.nodes if t is None else t).get(nid)

    def table(self, name: str) -> Mapping:
        """A read-only plain-dict view of the persistent map in field `name` (one of TABLES).

        Made once per graph value (O(n)), then remembered: a dict lookup costs ~0.05 µs against
        ~1.5 µs for a pure-Python PMap lookup, which is what whole-graph sweeps (the checker,
        matching) spend most of their time on. `GraphBuilder.finish` seeds the tables from the
        dicts it built anyway, so graphs made by a sweep get them for free. Local edits do not
        call this (it would make each edit O(n)); single lookups use the table only if present.
        """
        key = name + "_t"
        t = self._cache.get(key)
        if t is None:
            if name not in TABLES:
                raise GraphError(f"no table {name!r}; tables are {', '.join(TABLES)}")
            m = getattr(self, "_" + name)
            t = self._cache[key] = MappingProxyType(m.table if isinstance(m, Pending) else dict(m.items()))
        return t

    def ids(self) -> tuple[str, ...]:
        """All ids in order (O(n) once per graph value, then cached)."""
        ids = self._cache.get("ids")
        if ids is None:
            out = []
            nid = self.head
            nxt = self.next
            while nid is not None:
                out.append(nid)
                nid = nxt.get(nid)
            ids = self._cache["ids"] = tuple(out)
        return ids

    def node_list(self) -> tuple[Node, ...]:
        """All nodes in order (O(n) once per graph value, then cached)."""
        nodes = self._cache.get("nodes")
        if nodes is None:
            t = self._cache.get("nodes_t")
            get = (self.nodes if t is None else t).__getitem__
            nodes = self._cache["nodes"] = tuple(map(get, self.ids()))
        return nodes

    def users(self, nid: str) -> tuple[str, ...]:
        """Ids of the nodes that read `nid`, in graph order. O(k log n) for k users."""
        cache = self._cache
        t = cache.get("users_map_t")
        us = (self.users_map if t is None else t).get(nid)
        if us is None:
            raise GraphError(f"no node with id {nid!r} in this graph", node_id=nid)
        if len(us) < 2:
            return us
        pos = cache.get("pos_t") or self.pos
        return tuple(sorted(us, key=pos.__getitem__))

    def position(self, nid: str) -> int:
        """A key that increases along the order (compare two nodes in O(log n))."""
        p = self.pos.get(nid)
        if p is None:
            raise GraphError(f"no node with id {nid!r} in this graph", node_id=nid)
        return p

    def before(self, a: str, b: str) -> bool:
        return self.position(a) < self.position(b)

    def placeholders(self) -> tuple[Node, ...]:
        return tuple(n for n in self.node_list() if n.op == "placeholder")

    def output(self) -> Node:
        """The output node (the last node of a well-formed graph)."""
        if self.tail is None or self.nodes[self.tail].op != "output":
            raise GraphError("graph has no output node as its last node")
        return self.nodes[self.tail]

    def fresh_id(self, prefix: str) -> str:
        """An id not used before in this graph's history, fx-style. O(log n)."""
        base = sanitize(prefix)
        return next_free(base, self.counters.get(base), self.nodes)

    # ------------------------------------------------------------------- edits
    def insert_after(self, anchor: str, node: Node) -> Graph:
        """A new graph with `node` placed right after `anchor`. O(log n)."""
        self.node(anchor)
        return self._link(node, anchor, self.next.get(anchor))

    def insert_before(self, anchor: str, node: Node) -> Graph:
        """A new graph with `node` placed right before `anchor`. O(log n)."""
        self.node(anchor)
        return self._link(node, self.prev.get(anchor), anchor)

    def append(self, node: Node) -> Graph:
        """A new graph with `node` last. O(log n)."""
        return self._link(node, self.tail, None)

    def erase(self, nid: str) -> Graph:
        """A new graph without `nid`, which must have no users. O(log n)."""
        node = self.node(nid)
        if self.users_map[nid]:
            raise GraphError(
                f"cannot erase %{nid}: still used by {', '.join('%' + u for u in self.users(nid))}",
                node_id=nid,
                hint="replace its uses first (replace_all_uses)",
            )
        p, n = self.prev.get(nid), self.next.get(nid)
        # discard, not remove: the head has no prev entry and the tail no next entry.
        prev, nxt = self.prev.discard(nid), self.next.discard(nid)
        if p is not None:
            nxt = nxt.remove(p) if n is None else nxt.set(p, n)
        if n is not None:
            prev = prev.remove(n) if p is None else prev.set(n, p)
        users = self.users_map.remove(nid)
        for i in node.input_ids():
            users = users.set(i, tuple(u for u in users[i] if u != nid))
        return Graph(
            self.nodes.remove(nid), users, prev, nxt, self.pos.remove(nid),
            n if self.head == nid else self.head, p if self.tail == nid else self.tail,
            self.counters,
        )

    def replace_node(self, node: Node) -> Graph:
        """A new graph where the node with `node.id` becomes `node` (same place). O(k log n)."""
        old = self.node(node.id)
        if old is node:
            return self
        if not is_valid_op(node.op):  # insert and the builder refuse it; so must this
            raise GraphError(f"bad op {node.op!r}", node_id=node.id)
        self._check_inputs(node, self.pos[node.id])
        users = _reindex_users(self.users_map, node.id, old.input_ids(), node.input_ids())
        return self._evolve(nodes=self.nodes.set(node.id, node), users_map=users)

    def update(self, nid: str, **changes: Any) -> Graph:
        """Shorthand for replace_node with some fields of node `nid` changed."""
        old = self.node(nid)
        fields: dict[str, Any] = {"op": old.op, "target": old.target, "args": old.args, "kwargs": old.kwargs, "meta": old.meta}
        fields.update(changes)
        return self.replace_node(Node(nid, **fields))

    def replace_all_uses(self, old: str, new: str, *, skip: Iterable[str] = ()) -> Graph:
        """A new graph where every reader of `old` reads `new` instead.

        Readers in `skip`, and `new` itself, keep reading `old`. Every moved reader must come
        after `new`. O(k log n) for k readers.
        """
        self.node(new)
        skipped = set(skip) | {new}
        movers = [u for u in self.users(old) if u not in skipped]
        if not movers:
            return self
        new_pos = self.pos[new]
        nodes, users = self.nodes.evolver(), self.users_map
        swap = {old: Ref(new)}
        for u in movers:
            if self.pos[u] <= new_pos:
                raise GraphError(
                    f"cannot make %{u} read %{new}: %{new} is defined after it", node_id=u
                )
            nodes[u] = nodes[u].map_refs(lambda i: swap.get(i) or Ref(i))
        kept = tuple(u for u in users[old] if u not in set(movers))
        added = tuple(u for u in movers if u not in users[new])
        users = users.set(old, kept).set(new, users[new] + added)
        return self._evolve(nodes=nodes.persistent(), users_map=users)

    def builder(self):  # -> GraphBuilder (imported lazily to keep modules acyclic)
        """A transient builder for a whole-graph rewrite, seeded with this graph's counters."""
        from .builder import GraphBuilder

        return GraphBuilder(counters=dict(self.counters))

    # ---------------------------------------------------------------- internals
    def _evolve(self, **changes: Any) -> Graph:
        fields = self._raw()  # unchanged maps stay pending
        fields.update(changes)
        return Graph(**fields)

    def _check_inputs(self, node: Node, at: float) -> None:
        for i in node.input_ids():
            p = self.pos.get(i)
            if p is None:
                raise GraphError(f"%{node.id} reads %{i}, which is not in the graph", node_id=node.id)
            if p >= at:
                raise GraphError(f"%{node.id} reads %{i}, which is not defined before it", node_id=node.id)

    def _link(self, node: Node, p: str | None, n: str | None) -> Graph:
        nid = node.id
        if nid in self.nodes:
            raise GraphError(f"id {nid!r} is already in the graph", node_id=nid, hint="use graph.fresh_id(prefix)")
        if not ID_RE.match(nid) or not is_valid_op(node.op):
            raise GraphError(f"bad node id {nid!r} or op {node.op!r}", node_id=nid)
        g = self if _gap(self.pos, p, n) else self._renumbered()
        key = _key_between(g.pos, p, n)
        g._check_inputs(node, key)
        prev, nxt = g.prev, g.next
        if p is not None:
            prev, nxt = prev.set(nid, p), nxt.set(p, nid)
        if n is not None:
            prev, nxt = prev.set(n, nid), nxt.set(nid, n)
        users = g.users_map.set(nid, ())
        for i in node.input_ids():
            users = users.set(i, users[i] + (nid,))
        base, k = split_id(nid)
        counters = g.counters if g.counters.get(base, -1) >= k else g.counters.set(base, k)
        return Graph(
            g.nodes.set(nid, node), users, prev, nxt, g.pos.set(nid, key),
            nid if p is None else g.head, nid if n is None else g.tail, counters,
        )

    def _renumbered(self) -> Graph:
        return self._evolve(pos=pmap({nid: (i + 1) * GAP for i, nid in enumerate(self.ids())}))

    @staticmethod
    def from_nodes(nodes: Iterable[Node], counters: dict[str, int] | None = None) -> Graph:
        """Build a graph from nodes in order (O(n)); see GraphBuilder for the checks."""
        from .builder import GraphBuilder
        from .gcpause import paused_gc

        with paused_gc():
            b = GraphBuilder(counters=dict(counters or {}))
            for node in nodes:
                b.add(node)
            return b.finish()


def _gap(pos: PMap, p: str | None, n: str | None) -> bool:
    if p is None or n is None:
        return True
    return pos[n] - pos[p] >= 2


def _key_between(pos: PMap, p: str | None, n: str | None) -> int:
    if p is None and n is None:
        return GAP
    if p is None:
        return pos[n] - GAP
    if n is None:
        return pos[p] + GAP
    return (pos[p] + pos[n]) // 2


def _reindex_users(users: PMap, nid: str, old_inputs: tuple, new_inputs: tuple) -> PMap:
    for i in set(old_inputs) - set(new_inputs):
        users = users.set(i, tuple(u for u in users[i] if u != nid))
    for i in new_inputs:
        if i not in old_inputs:
            users = users.set(i, users[i] + (nid,))
    return users


def counters_for(ids: Iterable[str]) -> PMap:
    return pmap(derive_counters(ids))

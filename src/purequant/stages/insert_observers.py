"""Stage: insert observer nodes where the QuantPlan says (the observed graph).

Vocabulary (lowering relies on it): an observer is a node

    %<value>_obs = call_function purequant.observe(%<value>)

placed right after the value it observes; every other reader of the value reads the observer
instead. Its id is `graph.fresh_id(value_id + "_obs")`. Values that share another value's
observer get no node (`ObserverInsertion.shares`); call_module weights and weight parameters
get no node either (`ObserverInsertion.weights`): they are observed from the parameters at
convert time.
"""

from __future__ import annotations

from attrs import frozen
from pyrsistent import PMap, pmap

from ..ir import Graph, Node, Ref, paused_gc
from ..observers.spec import ObserverSpec
from .find_quants import QuantPlan

OBSERVE = "purequant.observe"
STAGE = "insert_observers"
# Below this many observers per node, local edits (O(k log n)) beat rebuilding the graph
# (O(n)). Measured (GC paused, 2 loaded cores) on residual chains of 1k-30k nodes: a local
# insert costs 100-450 us per observer (insert_after + replace_all_uses), a sweep 20-40 us
# per node; they cross near k/n = 0.1 at every size (30k nodes: 300 observers 90 ms local vs
# 1.05 s sweep; 9,900 observers 4.5 s local vs 1.2 s sweep). Real plans observe about a
# third of the nodes, so they sweep; small incremental plans edit locally.
# Re-measure with `pytest -m slow tests/test_insert_observers.py -s`.
LOCAL_EDIT_RATIO = 0.05


@frozen
class ObserverSlot:
    """What one observer node observes.

    Attributes:
        value_id: the observed value.
        spec: how it is observed.
        is_weight: a weight (no calibration data needed).
        role: "input", "output" or "weight" (see QuantPlan).
    """

    value_id: str
    spec: ObserverSpec
    is_weight: bool
    role: str


@frozen
class ObserverInsertion:
    """Record of insert_observers.

    Attributes:
        slots: observer node id -> ObserverSlot.
        shares: value id -> observer node id it shares (the value has no observer of its own).
        weights: module path or get_attr id -> weight spec (no node; observed from params).
        skipped: value id -> why no observer was inserted for a planned one.
    """

    slots: PMap
    shares: PMap
    weights: PMap
    skipped: PMap

    def observer_of(self, value_id: str) -> str | None:
        """The observer node id for a value: its own slot's, or the one it shares."""
        for oid, slot in self.slots.items():
            if slot.value_id == value_id:
                return oid
        return self.shares.get(value_id)


def is_observer(node: Node) -> bool:
    return node.op == "call_function" and node.target == OBSERVE


def insert_observers(graph: Graph, plan: QuantPlan) -> tuple[Graph, ObserverInsertion]:
    """Insert one observer per planned value, in graph order.

    Reads the graph and the QuantPlan. Never observes an observer, never observes a value
    twice (a value already read by an observer keeps it; the plan entry is skipped with a
    reason). Returns the very same graph when there is nothing to insert. O(k log n) for k
    observers by local edits, or O(n) by one builder sweep when k is a larger share of n.
    """
    # Allocation-heavy and cycle-free: cyclic GC would rescan the whole live heap (the traced
    # model included) again and again for nothing; measured 3x-15x on 20k-node graphs.
    with paused_gc():
        return _insert(graph, plan)


def _insert(graph: Graph, plan: QuantPlan) -> tuple[Graph, ObserverInsertion]:
    todo, skipped, existing = _todo(graph, plan)
    g, ids = graph, dict[str, str]()
    if todo:
        local = len(todo) < LOCAL_EDIT_RATIO * len(graph)
        g, ids = (_by_local_edits if local else _by_sweep)(graph, todo)
    slots = {
        ids[v]: ObserverSlot(v, vq.spec, vq.is_weight, vq.role) for v, vq in plan.observe.items() if v in ids
    }  # before merging `existing`: observers already in the graph get no new slot
    ids = {**existing, **ids}
    shares = {v: ids[r] for v, r in plan.shares.items() if r in ids}
    return g, ObserverInsertion(pmap(slots), pmap(shares), plan.weights, pmap(skipped))


def _todo(graph: Graph, plan: QuantPlan) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Planned values to observe in graph order, refusals with reasons, existing observers."""
    todo, skipped, existing = [], {}, {}
    for v in plan.observe:
        node = graph.get(v)
        if node is None:
            skipped[v] = "not in the graph"
        elif is_observer(node):
            skipped[v] = "is an observer: observers are never observed"
        else:
            have = next((u for u in graph.users(v) if is_observer(graph.node(u))), None)
            if have is not None:
                skipped[v] = f"already observed by %{have}"
                existing[v] = have  # values sharing v's observer share this one
            else:
                todo.append(v)
    pos = graph.table("pos")  # a dict view: sorting probes it once per value
    todo.sort(key=pos.__getitem__)
    return todo, skipped, existing


# Shared by every observer node: building two maps per node showed up in profiles.
_META, _NO_KWARGS = pmap({"stage": STAGE}), pmap()


def _observer(oid: str, value: str) -> Node:
    return Node(oid, "call_function", OBSERVE, (Ref(value),), _NO_KWARGS, _META)


def _by_local_edits(graph: Graph, todo: list[str]) -> tuple[Graph, dict[str, str]]:
    """insert_after + replace_all_uses per value: O(log n) each plus O(k log n) for readers."""
    g, ids = graph, {}
    for v in todo:
        oid = g.fresh_id(v + "_obs")
        g = g.insert_after(v, _observer(oid, v))
        g = g.replace_all_uses(v, oid, skip=(oid,))
        ids[v] = oid
    return g, ids


def _by_sweep(graph: Graph, todo: list[str]) -> tuple[Graph, dict[str, str]]:
    """One pass through a builder: copy each node with reads renamed, observers after values."""
    b = graph.builder()
    wanted, rename, ids = set(todo), dict[str, str](), dict[str, str]()
    for node in graph.node_list():
        if rename and any(i in rename for i in node.input_ids()):
            node = node.map_refs(lambda i: Ref(rename.get(i, i)))
        b.add(node)
        if node.id in wanted:
            oid = b.fresh_id(node.id + "_obs")
            b.add(_observer(oid, node.id))
            rename[node.id] = ids[node.id] = oid
    return b.finish(), ids

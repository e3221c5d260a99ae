"""A state machine driving the Graph edit API against a plain Python list of nodes.

Every rule edits the current graph through the public API and the model through list
operations. After every step: the graph is well-formed, its ids, nodes and users equal the
model's, its internal maps have no stale entries, and every older version kept in `history`
still prints exactly as it did when it was made (persistence: an edit never changes an old
graph). Every id handed out by `fresh_id` is new to the whole history, including ids of nodes
erased since. Rules that must fail (erase a used node, a duplicate id, a use before its
definition) check the error and that nothing changed.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pyrsistent import pmap, pvector

from purequant.errors import GraphError
from purequant.ir import Graph, Node, Ref, Slice, Sym, check_graph, print_graph
from purequant.testing.strategies import graphs

# Prefixes include ones that sanitize oddly (`a_1_5`, `9lives`, `layer1.0.conv`) and ones that
# collide with numbered ids (`add_1`), where fresh-id bookkeeping is easiest to get wrong.
PREFIXES = ("add", "add_1", "a_1_5", "relu", "x", "output", "layer1.0.conv", "9lives", "_1", "obs")
OPS = ("call_function", "call_method", "call_module", "get_attr")
TARGETS = ("operator.add", "torch.relu", "view", "conv1", "weight")
# A fixed sample of constants: this machine tests edits, not values (the text tests draw those),
# and drawing nested values per node would dominate its run time.
CONSTANTS = (None, 0, -1, 2.5, -0.0, float("nan"), "it's", Ellipsis, Sym("torch.float32"),
             Slice(None, 2), (1, 2), pvector([3]), pmap({"k": 1}))


def _text(graph: Graph) -> str:
    # Print a fresh Graph over the same maps: the version's own caches could hide a change.
    return print_graph(attrs.evolve(graph))


class EditMachine(RuleBasedStateMachine):
    """Current graph + list model + history of (version, text when made)."""

    graph: Graph
    model: list[Node]

    @initialize(start=graphs(max_ops=4))
    def start(self, start: Graph) -> None:
        self.graph = start
        self.model = list(start.node_list())
        self.history: list[tuple[Graph, str]] = [(start, _text(start))]
        self.ever_ids: set[str] = set(start.ids())
        self.burst_done = False

    # ------------------------------------------------------------------ helpers
    def _index(self, nid: str) -> int:
        return [n.id for n in self.model].index(nid)

    def _users(self, nid: str) -> list[str]:
        return [n.id for n in self.model if nid in n.input_ids()]

    def _commit(self, graph: Graph, *, record: bool = True) -> None:
        self.graph = graph
        self.ever_ids.update(graph.ids())
        if record:
            self.history.append((graph, _text(graph)))

    def _fresh(self, data, graph: Graph | None = None) -> str:
        graph = graph or self.graph
        nid = graph.fresh_id(data.draw(st.sampled_from(PREFIXES), label="prefix"))
        assert nid not in self.ever_ids, f"fresh_id handed out {nid!r}, used before in this history"
        return nid

    def _new_node(self, data, nid: str, visible: list[Node]) -> Node:
        """A node reading only `visible` nodes (those defined before where it goes)."""
        op = data.draw(st.sampled_from(OPS), label="op")
        values = [n for n in visible if n.op != "output"]
        refs = st.sampled_from([Ref(n.id) for n in values]) if values else st.nothing()
        arg = refs | st.sampled_from(CONSTANTS)
        args = tuple(data.draw(st.lists(arg, max_size=3), label="args"))
        kwargs = data.draw(st.dictionaries(st.sampled_from(["dim", "alpha", "other"]), arg, max_size=2), label="kwargs")
        meta = data.draw(st.dictionaries(st.sampled_from(["scope", "stage"]), st.sampled_from(CONSTANTS), max_size=1))
        return Node(nid, op, data.draw(st.sampled_from(TARGETS)), args, kwargs, meta)

    def _non_output(self) -> list[Node]:
        return [n for n in self.model if n.op != "output"]

    # ------------------------------------------------------------------ edits
    @rule(data=st.data())
    def insert_after(self, data) -> None:
        anchor = data.draw(st.sampled_from(self._non_output()), label="anchor")
        k = self._index(anchor.id)
        node = self._new_node(data, self._fresh(data), self.model[: k + 1])
        self._commit(self.graph.insert_after(anchor.id, node))
        self.model.insert(k + 1, node)

    @rule(data=st.data())
    def insert_before(self, data) -> None:
        anchor = data.draw(st.sampled_from(self.model), label="anchor")
        k = self._index(anchor.id)
        node = self._new_node(data, self._fresh(data), self.model[:k])
        self._commit(self.graph.insert_before(anchor.id, node))
        self.model.insert(k, node)

    @rule(data=st.data())
    def append(self, data) -> None:
        # Appending after the output would leave it not last: take the output off, append,
        # put a new output back. The two intermediate versions are kept in history too.
        out = self.model[-1]
        without = self.graph.erase(out.id)
        self._commit(without)
        node = self._new_node(data, self._fresh(data, without), self.model[:-1])
        appended = without.append(node)
        self._commit(appended)
        new_out = Node(self._fresh_output(appended), "output", "output", out.args, out.kwargs)
        self._commit(appended.append(new_out))
        self.model[-1:] = [node, new_out]

    def _fresh_output(self, graph: Graph) -> str:
        nid = graph.fresh_id("output")
        assert nid not in self.ever_ids, f"fresh_id handed out {nid!r}, used before in this history"
        return nid

    @precondition(lambda self: not self.burst_done)
    @rule(data=st.data())
    def burst_of_inserts(self, data) -> None:
        # 34 inserts right after one anchor halve the gap between position keys 34 times,
        # which exhausts the 2**32 gap and forces a renumbering. Once per run, and only the
        # last version is kept in history, to keep the per-step history check cheap.
        self.burst_done = True
        anchor = data.draw(st.sampled_from(self._non_output()), label="anchor")
        k = self._index(anchor.id)
        graph = self.graph
        for _ in range(34):
            nid = graph.fresh_id("obs")
            assert nid not in self.ever_ids
            node = Node(nid, "call_function", "observe", (Ref(anchor.id),))
            graph = graph.insert_after(anchor.id, node)
            self.ever_ids.add(nid)
            self.model.insert(k + 1, node)
        self._commit(graph)

    @precondition(lambda self: any(not self._users(n.id) for n in self._non_output()))
    @rule(data=st.data())
    def erase_unused(self, data) -> None:
        unused = [n for n in self._non_output() if not self._users(n.id)]
        victim = data.draw(st.sampled_from(unused), label="victim")
        self._commit(self.graph.erase(victim.id))
        del self.model[self._index(victim.id)]

    @rule(data=st.data())
    def replace_all_uses(self, data) -> None:
        old = data.draw(st.sampled_from(self._non_output()), label="old")
        new = data.draw(st.sampled_from(self._non_output()), label="new")
        users = self._users(old.id)
        skip = data.draw(st.sets(st.sampled_from(users)) if users else st.just(set()), label="skip")
        movers = [u for u in users if u not in skip and u != new.id]
        if any(self._index(u) <= self._index(new.id) for u in movers):
            with pytest.raises(GraphError, match="is defined after it"):
                self.graph.replace_all_uses(old.id, new.id, skip=skip)
            return
        self._commit(self.graph.replace_all_uses(old.id, new.id, skip=skip))
        for k, n in enumerate(self.model):
            if n.id in movers:
                self.model[k] = n.map_refs(lambda i: Ref(new.id if i == old.id else i))

    @rule(data=st.data())
    def update(self, data) -> None:
        target = data.draw(st.sampled_from(self.model), label="node")
        k = self._index(target.id)
        fresh = self._new_node(data, target.id, self.model[:k])
        changed = Node(target.id, target.op, fresh.target, fresh.args, fresh.kwargs, fresh.meta)
        self._commit(self.graph.update(target.id, target=fresh.target, args=fresh.args,
                                       kwargs=fresh.kwargs, meta=fresh.meta))
        self.model[k] = changed

    # ------------------------------------------------------------------ edits that must fail
    @precondition(lambda self: any(self._users(n.id) for n in self.model))
    @rule(data=st.data())
    def erase_used_fails(self, data) -> None:
        used = [n for n in self.model if self._users(n.id)]
        victim = data.draw(st.sampled_from(used), label="victim")
        with pytest.raises(GraphError, match=f"cannot erase %{victim.id}: still used by %"):
            self.graph.erase(victim.id)

    @rule(data=st.data())
    def duplicate_id_fails(self, data) -> None:
        taken = data.draw(st.sampled_from(self.model), label="taken")
        anchor = data.draw(st.sampled_from(self._non_output()), label="anchor")
        with pytest.raises(GraphError, match="already in the graph"):
            self.graph.insert_after(anchor.id, Node(taken.id, "call_function", "f"))

    @precondition(lambda self: len(self._non_output()) >= 2)
    @rule(data=st.data())
    def use_before_definition_fails(self, data) -> None:
        k = data.draw(st.integers(0, len(self._non_output()) - 2), label="k")
        early, late = self.model[k], self.model[k + 1]
        with pytest.raises(GraphError, match="not defined before it"):
            self.graph.update(early.id, args=(Ref(late.id),))
        with pytest.raises(GraphError, match="not defined before it"):
            self.graph.insert_before(late.id, Node(self.graph.fresh_id("bad"), "call_function", "f", (Ref(late.id),)))

    # ------------------------------------------------------------------ invariants
    @invariant()
    def matches_model(self) -> None:
        g = self.graph
        check_graph(g)
        assert g.ids() == tuple(n.id for n in self.model)
        assert g.node_list() == tuple(self.model)
        assert all(g.node(n.id).meta == n.meta for n in self.model)
        users: dict[str, list[str]] = {n.id: [] for n in self.model}
        for n in self.model:
            for i in n.input_ids():
                users[i].append(n.id)
        for nid, readers in users.items():
            assert list(g.users(nid)) == readers, nid
        # No stale entries left behind by erase/insert in the internal maps.
        assert set(g.pos) == set(g.users_map) == set(g.nodes)
        assert len(g.prev) == len(g.next) == len(g) - 1

    @invariant()
    def old_versions_unchanged(self) -> None:
        for k, (version, text) in enumerate(self.history):
            fresh = attrs.evolve(version)  # same maps, empty caches
            assert print_graph(fresh) == text, f"version {k} of the history changed"
            cached, walked = version.node_list(), fresh.node_list()
            assert len(cached) == len(walked) and all(a is b for a, b in zip(cached, walked)), (
                f"the cached order of version {k} changed"
            )


EditMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=20, deadline=None)
TestEdits = EditMachine.TestCase

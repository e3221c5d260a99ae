"""insert_observers: Before/After goldens, the observer vocabulary, both edit strategies."""

from __future__ import annotations

import gc
import time

import pytest
from pyrsistent import pmap
from quant_testkit import (
    ACT,
    GOLDENS,
    cases,
    format_insertion,
    golden,
    graph_of,
    modules_of,
    qconfigs_of,
)

from purequant.ir import GraphBuilder, Ref, check_graph, print_graph
from purequant.patterns import default_table
from purequant.stages import insert_observers as io
from purequant.stages.find_matches import find_matches
from purequant.stages.find_quants import QuantPlan, ValueQuant, find_quants
from purequant.stages.insert_observers import OBSERVE, insert_observers, is_observer


def prepare(text: str):
    g = graph_of(text)
    plan = find_quants(g, find_matches(g, modules_of(g), default_table("x86"), qconfigs_of(g)))
    return g, plan


def _read(name: str) -> str:
    return (GOLDENS / "insert_observers" / f"{name}.before").read_text()


@pytest.mark.parametrize("name", cases("insert_observers"))
def test_golden(name):
    g, plan = prepare(_read(name))
    observed, rec = insert_observers(g, plan)
    check_graph(observed)
    golden("insert_observers", f"{name}.after", print_graph(observed))
    golden("insert_observers", f"{name}.record", format_insertion(rec))


def _plan(*values: str, shares: dict | None = None) -> QuantPlan:
    observe = {v: ValueQuant(ACT, False, "output", v) for v in values}
    return QuantPlan(pmap(observe), pmap(shares or {}), pmap(), pmap(), pmap())


def _vocabulary_holds(before, after, rec) -> None:
    for oid, slot in rec.slots.items():
        node = after.node(oid)
        v = slot.value_id
        assert node.op == "call_function" and node.target == OBSERVE and node.args == (Ref(v),)
        assert not node.kwargs and after.next[v] == oid  # right after the value
        assert after.users(v) == (oid,)  # every other reader moved to the observer
        assert set(after.users(oid)) == set(before.users(v))
        assert not is_observer(after.node(v))


@pytest.mark.parametrize("name", ["chain_shares", "cat_fixed", "functional_weights"])
def test_vocabulary(name):
    g, plan = prepare(_read(name))
    observed, rec = insert_observers(g, plan)
    _vocabulary_holds(g, observed, rec)
    assert set(rec.shares.values()) <= set(rec.slots)
    assert rec.weights == plan.weights


def test_ids_are_fresh_even_when_the_natural_name_is_taken():
    g, plan = prepare(_read("fresh_ids"))
    observed, rec = insert_observers(g, plan)
    assert {s.value_id: o for o, s in rec.slots.items()} == {
        "x": "x_obs_4", "conv_obs": "conv_obs_obs", "conv": "conv_obs_1", "add": "add_obs",
    }


def test_nothing_to_insert_returns_the_same_graph():
    g, plan = prepare(_read("dynamic"))
    assert not plan.observe
    observed, rec = insert_observers(g, plan)
    assert observed is g and not rec.slots and set(rec.weights) == {"emb", "lstm", "fc"}


def test_pure_and_deterministic():
    g, plan = prepare(_read("cat_fixed"))
    before = print_graph(g)
    a = insert_observers(g, plan)
    b = insert_observers(g, plan)
    assert print_graph(g) == before
    assert print_graph(a[0]) == print_graph(b[0]) and a[1] == b[1]


def test_local_edits_and_sweep_agree():
    g, plan = prepare(_read("chain_shares"))
    todo, _, _ = io._todo(g, plan)
    local, ids_l = io._by_local_edits(g, todo)
    sweep, ids_s = io._by_sweep(g, todo)
    assert local == sweep and ids_l == ids_s and local.counters == sweep.counters
    assert print_graph(local) == print_graph(sweep)
    check_graph(local), check_graph(sweep)


def test_never_observes_an_observer_or_twice():
    g, plan = prepare(_read("chain_shares"))
    observed, rec = insert_observers(g, plan)
    some_obs = next(iter(rec.slots))
    value = rec.slots[some_obs].value_id
    again, rec2 = insert_observers(observed, _plan(some_obs, value))
    assert again is observed and not rec2.slots
    assert rec2.skipped == {
        some_obs: "is an observer: observers are never observed",
        value: f"already observed by %{some_obs}",
    }
    # Re-running the whole front end on the observed graph adds no observer either.
    replan = find_quants(observed, find_matches(observed, modules_of(observed), default_table("x86"), qconfigs_of(observed)))
    third, rec3 = insert_observers(observed, replan)
    assert third is observed and not rec3.slots


def test_values_sharing_an_existing_observer_point_at_it():
    g, plan = prepare(_read("chain_shares"))
    observed, rec = insert_observers(g, plan)
    conv3_obs = next(o for o, s in rec.slots.items() if s.value_id == "conv3")
    _, rec2 = insert_observers(observed, _plan("conv3", shares={"pool": "conv3"}))
    assert rec2.shares == {"pool": conv3_obs} and not rec2.slots


# ---------------------------------------------------------------------------- timing
def residual_chain(n: int):
    """x = x + relu(conv(x)) blocks: n nodes, the shape of the models' residual chains."""
    b = GraphBuilder()
    prev = b.emit("placeholder", "x", prefix="x")
    for i in range((n - 2) // 3):
        c = b.emit("call_module", f"layers.{i}", (prev,), prefix="conv")
        r = b.emit("call_function", "torch.nn.functional.relu", (c,))
        prev = b.emit("call_function", "operator.add", (r, prev))
    b.emit("output", "output", (prev,))
    return b.finish()


def _best(f, reps: int = 3) -> float:
    out = []
    for _ in range(reps):
        gc.collect()
        gc.disable()
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
        gc.enable()
    return min(out)


@pytest.mark.slow
def test_strategies_timing():
    """Print local-edit vs sweep times at 1k-30k nodes (the data behind LOCAL_EDIT_RATIO)."""
    for n in (1000, 3000, 10000, 30000):
        g = residual_chain(n)
        ids = [i for i in g.ids() if g.nodes[i].op != "output"]
        for frac in (0.003, 0.01, 0.03, 0.1, 0.33):
            todo = sorted(ids[:: max(1, int(1 / frac))], key=g.pos.__getitem__)
            tl = _best(lambda g=g, todo=todo: io._by_local_edits(g, todo), 1 if len(todo) > 1000 else 3)
            ts = _best(lambda g=g, todo=todo: io._by_sweep(g, todo))
            print(f"n={n:6d} k={len(todo):5d} local {tl * 1e3:8.1f} ms  sweep {ts * 1e3:8.1f} ms")


def test_threshold_picks_the_cheaper_strategy_on_a_small_and_a_large_plan():
    g = residual_chain(3000)
    few = _plan(*[i for i in g.ids()[:5]])
    many = _plan(*[i for i in g.ids()[:-1:3]])
    assert len(few.observe) < io.LOCAL_EDIT_RATIO * len(g) <= len(many.observe)
    for plan in (few, many):
        observed, rec = insert_observers(g, plan)
        check_graph(observed)
        assert len(observed) == len(g) + len(rec.slots) == len(g) + len(plan.observe)

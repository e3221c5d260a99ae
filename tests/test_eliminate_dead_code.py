"""eliminate_dead_code: goldens (which double as replay inputs), purity rules and laws."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrsistent import pmap

from purequant import replay
from purequant.ir import (
    GraphBuilder,
    ModuleSpec,
    Node,
    Ref,
    check_graph,
    parse_graph,
    parse_node,
    print_graph,
)
from purequant.pipeline import CheckWellFormed, Dump, PipelineState, run, stage
from purequant.stages.eliminate_dead_code import DeadCodeRecord, eliminate_dead_code, is_impure
from purequant.testing import laws
from purequant.testing.strategies import graphs

GOLDENS = Path(__file__).parent / "goldens" / "eliminate_dead_code"
CASES = sorted(p.stem for p in GOLDENS.glob("*.before"))


def test_there_are_goldens():
    assert len(CASES) >= 4


@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    before = parse_graph((GOLDENS / f"{case}.before").read_text())
    after, record = eliminate_dead_code(before)
    assert print_graph(after) == (GOLDENS / f"{case}.after").read_text()
    assert set(before.ids()) - set(after.ids()) == set(record.removed)
    assert list(record.removed) == [i for i in before.ids() if i in record.removed]  # input order
    check_graph(after)


@pytest.mark.parametrize("case", CASES)
def test_golden_replays_from_a_dump(case, tmp_path):
    before = parse_graph((GOLDENS / f"{case}.before").read_text())
    run([stage(eliminate_dead_code)], PipelineState(before), instruments=(CheckWellFormed(), Dump(tmp_path)))
    folder = tmp_path / "000_eliminate_dead_code"
    assert (folder / "output.graph").read_text() == (GOLDENS / f"{case}.after").read_text()
    assert replay(folder).equal


def test_nothing_to_do_returns_the_same_graph():
    g = parse_graph((GOLDENS / "nothing_dead.before").read_text())
    out, record = eliminate_dead_code(g)
    assert out is g and record == DeadCodeRecord(())


def test_input_is_unchanged_and_result_idempotent():
    text = (GOLDENS / "dead_chain.before").read_text()
    g = parse_graph(text)
    once, _ = eliminate_dead_code(g)
    assert print_graph(g) == text
    twice, record = eliminate_dead_code(once)
    assert twice is once and record.removed == ()


GRAPH = """\
%x = placeholder x()
%fc = call_module fc(%x)
%bn = call_module bn(%x)
%drop = call_module drop(%x)
%block = call_module block(%x)
%output = output output(%x)
"""


def test_modules_table_lets_known_pure_modules_go():
    g = parse_graph(GRAPH)
    modules = pmap({
        "fc": ModuleSpec("torch.nn.Linear", {"training": False}),
        "bn": ModuleSpec("torch.nn.BatchNorm2d", {"training": True}),  # updates running stats
        "drop": ModuleSpec("torch.nn.Dropout", {"training": False}),
        "block": ModuleSpec("mypkg.Block"),  # unknown: may do anything
    })
    assert eliminate_dead_code(g)[0] is g  # without the table every call is kept
    out, record = eliminate_dead_code(g, modules)
    assert record.removed == ("fc", "drop")
    assert out.ids() == ("x", "bn", "block", "output")


@pytest.mark.parametrize("line, impure", [
    ("%a = call_method add_(%x, 1)", True),
    ("%a = call_method __getitem__(%x, 0)", False),
    ("%a = call_method __setitem__(%x, 0, 1)", True),
    ("%a = call_function torch.ops.aten.add_.Tensor(%x, %x)", True),
    ("%a = call_function torch.ops.aten.add.Tensor(%x, %x)", False),
    ("%a = call_function torch.nn.init.zeros_(%x)", True),
    ("%a = call_function torch.add(%x, 1, out=%x)", True),
    ("%a = call_function torch.nn.functional.relu(%x, inplace=False)", False),
    ("%a = get_attr weight()", False),
])
def test_purity_rules(line, impure):
    assert is_impure(parse_node(line)) is impure


def test_long_chain_is_linear_and_not_recursive():
    # 5k dead nodes in one chain (5x the recursion limit): a recursive liveness walk would overflow the stack.
    b = GraphBuilder()
    prev = b.add(Node("x", "placeholder", "x"))
    for _ in range(5_000):
        prev = b.emit("call_function", "torch.relu", (prev,), prefix="relu")
    b.add(Node("output", "output", "output", (Ref("x"),)))
    out, record = eliminate_dead_code(b.finish())
    assert out.ids() == ("x", "output") and len(record.removed) == 5_000


# Random graphs from a plain-data recipe: each op reads earlier values by look-back offsets.
TARGETS = ["torch.relu", "operator.add", "builtins.print", "torch._assert", "operator.iadd"]
recipes = st.lists(st.tuples(st.sampled_from(TARGETS), st.integers(1, 5), st.integers(1, 5)), max_size=30)


def build(recipe, outputs: int):
    b = GraphBuilder()
    refs = [b.add(Node("x", "placeholder", "x"))]
    for target, i, j in recipe:
        args = (refs[-min(i, len(refs))], refs[-min(j, len(refs))])
        refs.append(b.emit("call_function", target, args[: 1 if target == "torch.relu" else 2]))
    b.add(Node("output", "output", "output", (refs[-min(outputs, len(refs))],)))
    return b.finish()


@given(recipes, st.integers(1, 8))
def test_laws_on_random_graphs(recipe, outputs):
    g = build(recipe, outputs)
    out, record = eliminate_dead_code(g)
    check_graph(out)
    assert [i for i in g.ids() if i not in out] == list(record.removed)
    for node in out:  # nothing dead is left: every pure node feeds something
        assert is_impure(node) or out.users(node.id)
    for node in g:  # impure nodes and everything they read survive
        if is_impure(node):
            assert node.id in out and all(i in out for i in node.input_ids())
    assert eliminate_dead_code(out)[0] is out


@settings(max_examples=60, deadline=None)
@given(graphs())
def test_shared_stage_laws(graph):
    laws.check_laws(eliminate_dead_code, graph, idempotent=True)
    out, _ = eliminate_dead_code(graph)
    laws.check_noop_identity(eliminate_dead_code, out)

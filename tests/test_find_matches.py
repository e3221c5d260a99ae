"""find_matches: goldens, priorities, the single-user rule, skips with reasons, purity."""

from __future__ import annotations

import time

import pytest
from quant_testkit import (
    QCONFIGS,
    cases,
    format_matches,
    golden,
    graph_of,
    modules_of,
    qconfigs_of,
)

from purequant.ir import GraphBuilder, ModuleSpec, print_graph
from purequant.patterns import Observation, default_table
from purequant.stages.find_matches import find_matches

CUSTOM = {"custom": ("mypkg.Block",)}


def run(name: str, text: str):
    g = graph_of(text)
    table = default_table("onednn" if name.startswith("onednn") else "x86")
    return g, find_matches(g, modules_of(g), table, qconfigs_of(g), custom_modules=CUSTOM.get(name, ()))


@pytest.mark.parametrize("name", cases("find_matches"))
def test_golden(name):
    from quant_testkit import GOLDENS

    g, result = run(name, (GOLDENS / "find_matches" / f"{name}.before").read_text())
    golden("find_matches", f"{name}.matches", format_matches(g, result))


def _chain(*lines: str, qconfig: dict | None = None):
    text = "%x = placeholder x()\n" + "\n".join(lines) + "\n"
    g = graph_of(text)
    qmap = qconfigs_of(g)
    qmap.update(qconfig or {})
    return g, find_matches(g, modules_of(g), default_table("x86"), qmap)


CONV = "%conv = call_module conv(%x)  # type='torch.nn.Conv2d'"
BN = "%bn = call_module bn(%conv)  # type='torch.nn.BatchNorm2d'"


def test_conv_bn_relu_beats_conv_relu_beats_conv():
    g, r = _chain(CONV, BN, "%relu = call_module relu(%bn)  # type='torch.nn.ReLU'", "%output = output output(%relu)")
    assert r.matches["relu"].entry == "conv2d_bn_relu" and r.matches["conv"].nodes == ("conv", "bn", "relu")
    g, r = _chain(CONV, "%relu = call_module relu(%conv)  # type='torch.nn.ReLU'", "%output = output output(%relu)")
    assert r.matches["relu"].entry == "conv2d_relu" and r.matches["conv"].root == "relu"
    g, r = _chain(CONV, "%output = output output(%conv)")
    assert r.matches["conv"].entry == "conv2d"
    assert r.matches["conv"].anchor == "conv" and r.matches["conv"].module_weight == "conv"


def test_priority_is_the_entries_not_the_table_order():
    g, r = _chain(CONV, "%relu = call_module relu(%conv)  # type='torch.nn.ReLU'", "%output = output output(%relu)")
    import attrs

    table = default_table("x86")
    louder = table.with_entries(attrs.evolve(table.get("relu"), priority=1000))
    r2 = find_matches(g, modules_of(g), louder, qconfigs_of(g))
    assert r2.matches["relu"].entry == "relu" and r2.matches["conv"].entry == "conv2d"


def test_single_user_rule():
    g, r = _chain(CONV, "%relu = call_module relu(%conv)  # type='torch.nn.ReLU'", "%output = output output((%relu, %conv))")
    assert r.matches["relu"].entry == "relu" and r.matches["conv"].entry == "conv2d"


def test_nodes_already_matched_are_skipped():
    g, r = _chain(CONV, BN, "%relu = call_module relu(%bn)  # type='torch.nn.ReLU'", "%output = output output(%relu)")
    assert len({id(m) for m in r.matches.values()}) == 1  # bn and conv were not visited again


def test_skips_carry_reasons():
    g, r = _chain(CONV, "%output = output output(%conv)", qconfig={"conv": None})
    assert "conv" not in r.matches and r.skipped["conv"] == "qconfig is None (left in float)"
    g, r = _chain(CONV, "%output = output output(%conv)", qconfig={"conv": QCONFIGS["fp16"]})
    assert r.skipped["conv"] == (
        "conv2d: dtypes float16/float16 weight not supported (accepts quint8/qint8 weight)"
    )
    g, r = _chain(CONV, "%relu = call_module relu(%conv)  # type='torch.nn.ReLU'", "%output = output output(%relu)",
                  qconfig={"relu": QCONFIGS["other"]})
    # Different qconfigs: the fused pattern is rejected, each op is matched alone.
    assert r.matches["relu"].entry == "relu" and r.matches["conv"].entry == "conv2d"
    assert r.skipped == {} and r.matches["relu"].qconfig == QCONFIGS["other"]
    g, r = _chain(CONV, "%relu = call_module relu(%conv)  # type='torch.nn.ReLU'", "%output = output output(%relu)",
                  qconfig={"relu": None})
    assert r.skipped["relu"] == "qconfig is None (left in float)"
    assert "relu" not in r.matches and r.matches["conv"].entry == "conv2d"


def test_tensor_arguments_decide_binary_observation():
    g, r = _chain(
        "%y = placeholder y()",
        "%a = call_function operator.add(%x, %y)",
        "%b = call_function operator.add(%a, 2.0)",
        "%s = call_method size(%b, 0)",
        "%c = call_function operator.mul(%s, 2)",
        "%output = output output((%b, %c))",
    )
    obs = {k: m.observation for k, m in r.matches.items()}
    assert obs == {"a": Observation.OWN_OUTPUT, "b": Observation.SHARES_INPUT, "s": Observation.NONE, "c": Observation.NONE}
    assert r.matches["b"].shared_inputs == ("a",) and r.matches["c"].inputs == ()


def test_dynamic_and_weight_only():
    g, r = _chain(
        "%fc = call_module fc(%x)  # qconfig='dynamic', type='torch.nn.Linear'",
        "%emb = call_module emb(%x)  # qconfig='weight_only', type='torch.nn.EmbeddingBag'",
        "%output = output output((%fc, %emb))",
    )
    assert r.matches["fc"].is_dynamic and r.matches["fc"].inputs == ("x",)
    assert r.matches["emb"].observation is Observation.NONE and r.matches["emb"].module_weight == "emb"


def test_functional_weights_are_not_inputs():
    g, r = _chain(
        "%w = get_attr w()",
        "%lin = call_function torch.nn.functional.linear(%x, weight=%w)",
        "%output = output output(%lin)",
    )
    m = r.matches["lin"]
    assert m.inputs == ("x",) and m.weights == ("w",)


def test_pure_and_deterministic():
    from quant_testkit import GOLDENS

    text = (GOLDENS / "find_matches" / "priorities.before").read_text()
    g = graph_of(text)
    before = print_graph(g)
    a = find_matches(g, modules_of(g), default_table("x86"), qconfigs_of(g))
    b = find_matches(g, modules_of(g), default_table("x86"), qconfigs_of(g))
    assert a == b and print_graph(g) == before


def _long_chain(n: int):
    b = GraphBuilder()
    prev = b.emit("placeholder", "x", prefix="x")
    mods = {}
    for i in range(n // 3):
        c = b.emit("call_module", f"c{i}", (prev,), prefix=f"c{i}")
        r = b.emit("call_function", "torch.nn.functional.relu", (c,))
        prev = b.emit("call_function", "operator.add", (r, prev))
        mods[f"c{i}"] = ModuleSpec("torch.nn.Conv2d")
    b.emit("output", "output", (prev,))
    return b.finish(), mods


def test_linear_time():
    g1, m1 = _long_chain(3000)
    g2, m2 = _long_chain(12000)
    q1 = dict.fromkeys(g1.ids(), QCONFIGS["static"])
    q2 = dict.fromkeys(g2.ids(), QCONFIGS["static"])
    t = time.perf_counter()
    r1 = find_matches(g1, m1, default_table("x86"), q1)
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    r2 = find_matches(g2, m2, default_table("x86"), q2)
    t2 = time.perf_counter() - t
    assert all(m.entry in ("conv2d_relu", "add") for m in r2.matches.values() if m.root != "x")
    assert len(r2.matches) > 3 * len(r1.matches)
    assert t2 < 10 * t1 + 0.5, (t1, t2)  # 4x the nodes: well under quadratic

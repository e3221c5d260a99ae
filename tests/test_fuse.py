"""Tests of the fuse stage: goldens, numerics on the zoo, purity, idempotence, the rules."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest
import torch
from fuse_testkit import (
    bn_spec,
    conv_spec,
    emit,
    linear_spec,
    random_tensors,
    rel_err,
    relu_spec,
    run,
    snapshot,
    unchanged,
)
from pyrsistent import pmap

from purequant.ir import GraphBuilder, ModuleSpec, Node, Ref, check_graph, parse_graph, print_graph
from purequant.models import ZOO
from purequant.nn import ConvBn2d, ConvReLU2d, build_module
from purequant.stages._fuse_fold import fold_bn
from purequant.stages.fuse import FuseRecord, fuse

GOLDENS = Path(__file__).parent / "goldens" / "fuse"
UPDATE = bool(os.environ.get("PUREQUANT_UPDATE_GOLDENS"))
TOL = 1e-5


def _train(specs: dict[str, ModuleSpec]) -> dict[str, ModuleSpec]:
    return {k: attrs.evolve(s, attrs=s.attrs.set("training", True)) for k, s in specs.items()}


CASES = {
    "conv_bn_relu_eval": (
        {"conv": conv_spec("conv", 2, 3, 4), "bn": bn_spec("bn", 2, 4), "relu": relu_spec()},
        (2, 3, 5, 5)),
    "conv_bn_relu_train": (
        _train({"conv": conv_spec("conv", 2, 3, 4, bias=False), "bn": bn_spec("bn", 2, 4)}),
        (2, 3, 5, 5)),
    "linear_bn_relu_eval": (
        {"fc": linear_spec("fc", 8, 6), "bn": bn_spec("bn", 1, 6),
         "fc2": linear_spec("fc2", 6, 5, bias=False)},
        (4, 8)),
    "multi_user": (
        {"conv": conv_spec("conv", 2, 3, 4), "bn": bn_spec("bn", 2, 4), "relu": relu_spec(),
         "conv2": conv_spec("conv2", 2, 4, 4)},
        (2, 3, 5, 5)),
    "shared_relu": (
        {"conv": conv_spec("conv", 2, 3, 3), "relu": relu_spec(), "conv2": conv_spec("conv2", 2, 3, 3),
         "bn2": bn_spec("bn2", 2, 3)},
        (2, 3, 5, 5)),
    "conv_transpose_bn": (
        {"up": conv_spec("up", 2, 4, 6, groups=2, transpose=True), "bn": bn_spec("bn", 2, 6),
         "relu": relu_spec()},
        (2, 4, 5, 5)),
    "nothing_to_fuse": (
        {"conv": conv_spec("conv", 2, 3, 4), "bn": bn_spec("bn", 2, 4)},
        (2, 3, 5, 5)),
}


def _case(name: str):
    specs, shape = CASES[name]
    graph = parse_graph((GOLDENS / f"{name}.before").read_text())
    params = pmap(random_tensors(specs, seed=sorted(CASES).index(name)))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    return graph, params, pmap(specs), x


def _modules_text(modules) -> str:
    lines = []
    for path in sorted(modules):
        spec = modules[path]
        names = " ".join(f"{k}={v}" for k, v in sorted(spec.params.items()))
        lines.append(f"{path}: {spec.type} {names}".rstrip())
    return "\n".join(lines) + "\n"


def _golden(path: Path, text: str) -> None:
    if UPDATE or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{path.name} differs (PUREQUANT_UPDATE_GOLDENS=1 rewrites)"


# ------------------------------------------------------------------------------------ goldens
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    graph, params, modules, x = _case(name)
    g, p, m, record = fuse(graph, params, modules)
    check_graph(g)
    _golden(GOLDENS / f"{name}.after", print_graph(g))
    _golden(GOLDENS / f"{name}.after.modules", _modules_text(m))
    assert parse_graph(print_graph(g)) == g


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_cases_keep_numerics_purity_and_idempotence(name):
    graph, params, modules, x = _case(name)
    text, snap, before = print_graph(graph), snapshot(params), (dict(params), dict(modules))
    training = any(s.attr("training") for s in modules.values())
    # Training-mode bn updates running stats: give each run its own copy of the tensors.
    fresh = (lambda p: pmap({k: v.detach().clone() for k, v in p.items()})) if training else (lambda p: p)
    want = run(graph, fresh(params), modules, x)
    g, p, m, record = fuse(graph, params, modules)
    got = run(g, fresh(p), m, x)
    for a, b in zip(_flat(got), _flat(want)):
        assert rel_err(a, b) < TOL
    assert print_graph(graph) == text and dict(params) == before[0] and dict(modules) == before[1]
    assert unchanged(params, snap)
    g2, p2, m2, _ = fuse(g, p, m)
    assert (g2, p2, m2) == (g, p, m) and g2 is g and p2 is p and m2 is m


def _flat(v):
    return v if isinstance(v, tuple) else (v,)


def test_golden_records():
    rec = {name: fuse(*_case(name)[:3])[3] for name in CASES}
    r = rec["conv_bn_relu_eval"]
    assert [(f.pattern, f.nodes, f.node, f.module_type) for f in r.fusions] == [
        ("conv2d_bn2d_relu", ("conv", "bn", "relu"), "conv", "purequant.nn.ConvReLU2d")]
    assert r.fusions[0].new_params == ("conv.weight_fused", "conv.bias_fused")
    assert r.dropped_modules == ("bn", "relu")
    assert r.dropped_params == ("bn.bias", "bn.num_batches_tracked", "bn.running_mean",
                                "bn.running_var", "bn.weight", "conv.bias", "conv.weight")
    assert rec["conv_bn_relu_train"].fusions[0].module_type == "purequant.nn.ConvBnReLU2d"
    assert rec["conv_bn_relu_train"].dropped_params == ()
    assert [f.pattern for f in rec["linear_bn_relu_eval"].fusions] == ["linear_bn1d_relu", "linear_relu"]
    mu = rec["multi_user"]
    assert [f.pattern for f in mu.fusions] == ["conv2d_bn2d"]
    assert [(s.pattern, s.nodes) for s in mu.skipped] == [
        ("conv2d_bn2d_relu", ("conv", "bn", "relu")), ("conv2d_relu", ("conv2", "relu_1"))]
    assert all("2 users" in s.reason for s in mu.skipped)
    sr = rec["shared_relu"]
    assert [f.pattern for f in sr.fusions] == ["conv2d_relu", "conv2d_bn2d_relu"]
    assert sr.dropped_modules == ("bn2",)  # relu is still called by %relu_2
    assert rec["conv_transpose_bn"].fusions[0].module_type == "torch.nn.ConvTranspose2d"
    assert rec["nothing_to_fuse"] == FuseRecord()


def test_nothing_to_fuse_returns_the_same_objects():
    graph, params, modules, _ = _case("nothing_to_fuse")
    g, p, m, record = fuse(graph, params, modules)
    assert g is graph and p is params and m is modules and record == FuseRecord()


# ------------------------------------------------------------------------------- zoo numerics
@pytest.mark.parametrize("name, counts", [
    ("digits", {"conv2d_bn2d_relu": 3, "linear_relu": 1}),
    ("resnet18", {"conv2d_bn2d_relu": 9, "conv2d_bn2d": 11}),
    ("mobilenet_v2", {"conv2d_bn2d": 52}),
    ("chain_conv", {"conv2d_relu": 100}),
    ("chain_linear", {"linear_relu": 100}),
])
def test_zoo_numerics_through_the_emitter(name, counts):
    from purequant.trace import trace

    entry = ZOO[name]
    model = entry.build()
    x = entry.example_inputs(2)
    traced = trace(model)
    snap = snapshot(traced.params)
    with torch.no_grad():
        want = model(*x)
        g, p, m, record = fuse(traced.graph, traced.params, traced.modules)
        check_graph(g)
        err = rel_err(emit(traced, g, p, m)(*x), want)
    print(f"{name}: max relative error {err:.2e}")
    assert err < TOL
    assert record.pattern_counts() == counts and record.skipped == ()
    assert not any(s.type.startswith("torch.nn.BatchNorm") for s in m.values())
    assert unchanged(traced.params, snap)
    assert fuse(g, p, m)[:3] == (g, p, m)


@pytest.mark.parametrize("name", ["digits", "resnet18"])
def test_zoo_in_training_mode_keeps_bn_and_computes_the_same(name):
    from purequant.trace import trace

    entry = ZOO[name]
    reference, model = entry.build().train(), entry.build().train()
    x = entry.example_inputs(4)
    traced = trace(model)
    g, p, m, record = fuse(traced.graph, traced.params, traced.modules)
    assert p is traced.params and all(f.new_params == () for f in record.fusions)
    assert {f.module_type for f in record.fusions} >= {"purequant.nn.ConvBnReLU2d"}
    fused = emit(traced, g, p, m).train()
    torch.testing.assert_close(fused(*x), reference(*x), rtol=TOL, atol=TOL)
    # Batch norm ran in training mode in both: the same running statistics came out.
    for path, t in reference.named_buffers():
        torch.testing.assert_close(p[path], t, rtol=TOL, atol=TOL)


# -------------------------------------------------------------------------------- fold math
@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("transpose", [False, True])
def test_fold_matches_torch(dim, transpose):
    conv_cls = getattr(torch.nn, f"{'ConvTranspose' if transpose else 'Conv'}{dim}d")
    bn_cls = getattr(torch.nn, f"BatchNorm{dim}d")
    g = torch.Generator().manual_seed(dim)
    conv, bn = conv_cls(4, 6, 3), bn_cls(6)
    with torch.no_grad():
        for t in (*conv.parameters(), *bn.parameters()):
            t.copy_(torch.randn(t.shape, generator=g))
        bn.running_mean.copy_(torch.randn(6, generator=g))
        bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)
    conv.eval(), bn.eval()
    ref = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn, transpose=transpose)
    stats = {"weight": bn.weight, "bias": bn.bias, "running_mean": bn.running_mean,
             "running_var": bn.running_var}
    w, b = fold_bn(conv.weight, conv.bias, stats, bn.eps,
                   layout="conv_transpose" if transpose else "conv")
    torch.testing.assert_close(w, ref.weight, rtol=2e-7, atol=1e-7)
    torch.testing.assert_close(b, ref.bias, rtol=2e-7, atol=1e-7)
    assert isinstance(w, torch.nn.Parameter) and w.requires_grad and w.dtype == conv.weight.dtype


def test_fold_keeps_float64_and_plain_tensors():
    w, b = torch.randn(4, 3, 3, 3, dtype=torch.float64), None
    stats = {"weight": None, "bias": None, "running_mean": torch.zeros(4, dtype=torch.float64),
             "running_var": torch.full((4,), 3.0, dtype=torch.float64)}
    nw, nb = fold_bn(w, b, stats, 1.0, layout="conv")
    assert nw.dtype == nb.dtype == torch.float64 and type(nw) is torch.Tensor
    torch.testing.assert_close(nw, w / 2, rtol=0, atol=0)
    assert torch.equal(nb, torch.zeros(4, dtype=torch.float64))


def test_fold_linear_with_one_bn_feature():
    w = torch.randn(5, 3)
    stats = {"weight": torch.tensor([2.0]), "bias": torch.tensor([1.0]),
             "running_mean": torch.tensor([0.0]), "running_var": torch.tensor([1.0])}
    nw, nb = fold_bn(w, None, stats, 0.0, layout="linear")
    torch.testing.assert_close(nw, 2 * w)
    assert nb.shape == (5,) and torch.equal(nb, torch.ones(5))


# ------------------------------------------------------------------------------------- rules
def _chain(specs: dict[str, ModuleSpec], order: list[str], extra_reader: str | None = None):
    """x -> each module in `order` -> output; `extra_reader` also feeds the output."""
    b = GraphBuilder()
    prev = b.add(Node("x", "placeholder", "x"))
    refs = {}
    for path in order:
        nid = b.fresh_id(path)
        prev = refs[path] = b.add(Node(nid, "call_module", path, (prev,)))
    out = (prev, refs[extra_reader]) if extra_reader else prev
    b.add(Node("output", "output", "output", (out,)))
    return b.finish(), pmap(random_tensors(specs, 0)), pmap(specs)


def test_single_user_rule_leaves_chain_and_records_why():
    specs = {"conv": conv_spec("conv", 2, 3, 4), "bn": bn_spec("bn", 2, 4)}
    graph, params, modules = _chain(specs, ["conv", "bn"], extra_reader="conv")
    g, p, m, record = fuse(graph, params, modules)
    assert g is graph and p is params and m is modules
    (skip,) = record.skipped
    assert skip.pattern == "conv2d_bn2d" and skip.nodes == ("conv", "bn")
    assert "%conv has 2 users" in skip.reason


def test_training_bn_is_kept_not_folded():
    specs = _train({"conv": conv_spec("conv", 2, 3, 4), "bn": bn_spec("bn", 2, 4)})
    graph, params, modules = _chain(specs, ["conv", "bn"])
    g, p, m, record = fuse(graph, params, modules)
    assert p is params and record.fusions[0].new_params == ()
    spec = m["conv"]
    assert spec.type == "purequant.nn.ConvBn2d" and "bn" not in m
    assert spec.param("bn.running_var") == "bn.running_var" and spec.attr("bn.eps") == 1e-5
    module = build_module(spec, p)
    assert isinstance(module, ConvBn2d) and module.training and module.bn.training
    assert module.bn.running_mean is params["bn.running_mean"]


@pytest.mark.parametrize("tweak, reason", [
    (lambda s: {**s, "bn": attrs.evolve(s["bn"], attrs=s["bn"].attrs.set("training", True))},
     "same mode"),
    (lambda s: {**s, "bn": bn_spec("bn", 2, 4, stats=False)}, "running statistics"),
    (lambda s: {**s, "bn": bn_spec("bn", 2, 5)}, "5 features"),
])
def test_unfusable_bn_is_skipped_with_reason(tweak, reason):
    specs = tweak({"conv": conv_spec("conv", 2, 3, 4), "bn": bn_spec("bn", 2, 4)})
    graph, params, modules = _chain(specs, ["conv", "bn"])
    g, p, m, record = fuse(graph, params, modules)
    assert g is graph and record.fusions == ()
    assert reason in record.skipped[0].reason


def test_conv_transpose_bn_in_training_is_skipped():
    specs = _train({"up": conv_spec("up", 2, 4, 4, transpose=True), "bn": bn_spec("bn", 2, 4)})
    graph, params, modules = _chain(specs, ["up", "bn"])
    _, _, _, record = fuse(graph, params, modules)
    assert record.fusions == () and "no training-mode" in record.skipped[0].reason


def test_shared_conv_module_is_not_fused():
    specs = {"conv": conv_spec("conv", 2, 4, 4), "relu": relu_spec()}
    graph, params, modules = _chain(specs, ["conv", "relu", "conv"])
    _, _, _, record = fuse(graph, params, modules)
    assert record.fusions == ()
    assert "called by 2 nodes" in record.skipped[0].reason


def test_params_read_elsewhere_are_kept():
    specs = {"conv": conv_spec("conv", 2, 3, 4), "bn": bn_spec("bn", 2, 4)}
    graph, params, modules = _chain(specs, ["conv", "bn"])
    # A get_attr of the conv weight (say, for a regulariser) keeps the old weight alive.
    w = Node("w", "get_attr", "conv.weight")
    graph = graph.insert_after("x", w).update("output", args=((Ref("bn"), Ref("w")),))
    g, p, m, record = fuse(graph, params, modules)
    assert "conv.weight" in p and p["conv.weight"] is params["conv.weight"]
    assert "conv.weight" not in record.dropped_params and "bn.weight" in record.dropped_params


def test_fresh_param_paths_never_overwrite():
    specs = {"conv": conv_spec("conv", 2, 3, 4), "bn": bn_spec("bn", 2, 4)}
    graph, params, modules = _chain(specs, ["conv", "bn"])
    taken = torch.zeros(1)
    params = params.set("conv.weight_fused", taken)
    g, p, m, record = fuse(graph, params, modules)
    assert p["conv.weight_fused"] is taken
    assert record.fusions[0].new_params == ("conv.weight_fused_1", "conv.bias_fused")


def test_deterministic():
    a = fuse(*_case("shared_relu")[:3])
    b = fuse(*_case("shared_relu")[:3])
    assert a[0] == b[0] and a[2] == b[2] and a[3] == b[3] and set(a[1]) == set(b[1])
    assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def test_record_is_plain_data():
    from purequant.pipeline.codec import dumps, loads

    for name in CASES:
        record = fuse(*_case(name)[:3])[3]
        assert loads(dumps(record)) == record


def test_runs_as_a_pipeline_stage():
    from purequant.pipeline.stage import PipelineState, call_stage, stage

    graph, params, modules, x = _case("conv_bn_relu_eval")
    state, record = call_stage(stage(fuse, uses_params=True, uses_modules=True),
                               PipelineState(graph, params, modules))
    assert state.graph == fuse(graph, params, modules)[0] and isinstance(record, FuseRecord)


# ----------------------------------------------------------------------------- build_module
@pytest.mark.parametrize("padding, mode", [("same", "reflect"), (1, "circular"), ((2, 0), "replicate")])
def test_build_module_conv_padding_modes(padding, mode):
    conv = torch.nn.Conv2d(2, 3, (4, 3), padding=padding, padding_mode=mode)
    attrs_ = {k: v for k, v in vars(conv).items() if not k.startswith("_")}
    spec = ModuleSpec("torch.nn.Conv2d", attrs_, {"weight": "w", "bias": "b"})
    built = build_module(spec, {"w": conv.weight, "b": conv.bias})
    assert built._reversed_padding_repeated_twice == tuple(conv._reversed_padding_repeated_twice)
    x = torch.randn(1, 2, 6, 7)
    assert torch.equal(built(x), conv(x))


def test_build_module_fused_relu_shares_tensors():
    spec = ModuleSpec("purequant.nn.ConvReLU2d", conv_spec("c", 2, 3, 4).attrs,
                      {"weight": "c.weight", "bias": None})
    params = random_tensors({"c": conv_spec("c", 2, 3, 4)}, 0)
    module = build_module(spec, params)
    assert isinstance(module, ConvReLU2d) and module.weight is params["c.weight"]
    assert module.bias is None and not module.training
    x = torch.randn(1, 3, 5, 5)
    assert torch.equal(module(x), torch.relu(torch.nn.functional.conv2d(x, params["c.weight"], padding=1)))


def test_build_module_refuses_unknown_types():
    from purequant.errors import StageError

    with pytest.raises(StageError, match="cannot build"):
        build_module(ModuleSpec("mypkg.Block"), {})

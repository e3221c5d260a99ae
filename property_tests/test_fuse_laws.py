"""Laws of the fuse stage on random conv/linear (+bn) (+relu) chains, with Hypothesis.

A chain is drawn as plain data (a recipe) and built by a pure function, so failures shrink to
tiny chains. Laws: well-formed output, pure (inputs and the user's tensors unchanged),
deterministic, idempotent (a second run returns the very same objects), the record describes
exactly the diff, and outputs stay within 1e-5 relative of the unfused chain.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from attrs import frozen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyrsistent import pmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fuse_testkit import (  # noqa: E402
    bn_spec,
    conv_spec,
    linear_spec,
    random_tensors,
    rel_err,
    relu_spec,
    run,
    snapshot,
    unchanged,
)

from purequant.ir import GraphBuilder, Node, Ref, check_graph, print_graph  # noqa: E402
from purequant.stages.fuse import fuse  # noqa: E402

TOL = 1e-5
RELUS = ("none", "module", "module_inplace", "F.relu", "F.relu_inplace", "torch.relu",
         "torch.relu_", "method")


@frozen
class Block:
    bias: bool
    groups: int
    bn: bool
    affine: bool
    relu: str
    also_read: str  # "none", "root" or "bn": a second reader of that value (the output)


@frozen
class Recipe:
    kind: str  # conv, conv_transpose, linear
    dim: int
    channels: int
    training: bool
    blocks: tuple[Block, ...]
    seed: int


@st.composite
def recipes(draw) -> Recipe:
    kind = draw(st.sampled_from(["conv", "conv_transpose", "linear"]))
    dim = 1 if kind == "linear" else draw(st.integers(1, 3))
    channels = draw(st.sampled_from([2, 4]))
    block = st.builds(Block, st.booleans(), st.sampled_from([1, 2]) if kind != "linear" else st.just(1),
                      st.booleans(), st.booleans(), st.sampled_from(RELUS),
                      st.sampled_from(["none", "none", "root", "bn"]))
    blocks = tuple(draw(st.lists(block, min_size=1, max_size=4)))
    return Recipe(kind, dim, channels, draw(st.booleans()), blocks, draw(st.integers(0, 2**16)))


def build(r: Recipe):
    """(graph, params, modules, input) for a recipe. Pure: same recipe, equal results."""
    b, specs, extra = GraphBuilder(), {}, []
    prev = b.add(Node("x", "placeholder", "x"))
    for i, blk in enumerate(r.blocks):
        path = f"layers.{i}"
        if r.kind == "linear":
            specs[path] = linear_spec(path, r.channels, r.channels, bias=blk.bias, training=r.training)
        else:
            specs[path] = conv_spec(path, r.dim, r.channels, r.channels, bias=blk.bias, groups=blk.groups,
                                    transpose=r.kind == "conv_transpose", training=r.training)
        prev = root = b.add(Node(b.fresh_id(path), "call_module", path, (prev,)))
        if blk.bn:
            specs[f"{path}.bn"] = bn_spec(f"{path}.bn", r.dim, r.channels, training=r.training,
                                          affine=blk.affine)
            prev = b.add(Node(b.fresh_id("bn"), "call_module", f"{path}.bn", (prev,)))
        if blk.also_read != "none":
            extra.append(root if blk.also_read == "root" else prev)
        prev = _relu(b, specs, blk.relu, prev, f"{path}.relu", r.training)
    b.add(Node("output", "output", "output", ((prev, *dict.fromkeys(extra)),)))
    params = pmap(random_tensors(specs, r.seed))
    spatial = (4,) * r.dim if r.kind != "linear" else ()
    x = torch.randn((3, r.channels, *spatial), generator=torch.Generator().manual_seed(r.seed))
    return b.finish(), params, pmap(specs), x


def _relu(b: GraphBuilder, specs: dict, how: str, prev: Ref, path: str, training: bool) -> Ref:
    if how == "none":
        return prev
    if how.startswith("module"):
        specs[path] = relu_spec(training=training, inplace=how.endswith("inplace"))
        return b.add(Node(b.fresh_id("relu"), "call_module", path, (prev,)))
    if how.startswith("F.relu"):
        kwargs = {"inplace": True} if how.endswith("inplace") else {}
        return b.add(Node(b.fresh_id("relu"), "call_function", "torch.nn.functional.relu", (prev,), kwargs))
    if how == "method":
        return b.add(Node(b.fresh_id("relu"), "call_method", "relu", (prev,)))
    return b.add(Node(b.fresh_id("relu"), "call_function", how, (prev,)))


def _copy(params):
    # Training-mode bn updates its running stats: each run gets its own tensors.
    return pmap({k: v.detach().clone() for k, v in params.items()})


def _outputs(v):
    return v if isinstance(v, tuple) else (v,)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(recipes())
def test_pure_well_formed_and_within_tolerance(recipe):
    graph, params, modules, x = build(recipe)
    text, snap, before = print_graph(graph), snapshot(params), (dict(params), dict(modules))
    want = run(graph, _copy(params), modules, x)
    g, p, m, record = fuse(graph, params, modules)
    check_graph(g)
    assert print_graph(graph) == text and dict(params) == before[0] and dict(modules) == before[1]
    assert unchanged(params, snap)
    got = run(g, _copy(p), m, x)
    for a, w in zip(_outputs(got), _outputs(want), strict=True):
        assert rel_err(a, w) < TOL


@SETTINGS
@given(recipes())
def test_idempotent_and_deterministic(recipe):
    graph, params, modules, _ = build(recipe)
    g, p, m, record = fuse(graph, params, modules)
    g2, p2, m2, record2 = fuse(g, p, m)
    assert g2 is g and p2 is p and m2 is m and record2.fusions == ()
    again = fuse(*build(recipe)[:3])
    assert again[0] == g and again[2] == m and again[3] == record
    assert set(again[1]) == set(p) and all(torch.equal(again[1][k], p[k]) for k in p)


@SETTINGS
@given(recipes())
def test_record_describes_the_diff(recipe):
    graph, params, modules, _ = build(recipe)
    g, p, m, record = fuse(graph, params, modules)
    removed = set(graph.ids()) - set(g.ids())
    assert removed == {nid for f in record.fusions for nid in f.nodes[1:]}
    assert set(g.ids()) <= set(graph.ids())
    new = {path for f in record.fusions for path in f.new_params}
    assert set(p) == (set(params) - set(record.dropped_params)) | new
    assert set(m) == set(modules) - set(record.dropped_modules)
    for f in record.fusions:
        assert m[g.node(f.node).target].type == f.module_type
    if not record.fusions:
        assert g is graph and p is params and m is modules

"""Tests of the torch.fx boundary: trace -> IR -> GraphModule.

Round trips are checked bit for bit (`torch.equal`), the traced model is checked unchanged
(state_dict tensors, training flags, `__dict__` keys, no deepcopy), metas are checked against
marked source lines of this file (`# MARK:name`).
"""

from __future__ import annotations

import copy
import functools
import random
import sys

import pytest
import torch
import torch.nn.functional as F
from pyrsistent import pmap
from torch import nn

import purequant
from purequant.errors import TraceError
from purequant.ir import ModuleSpec, check_graph, parse_graph, print_graph
from purequant.models import ZOO, residual_chain_for_nodes
from purequant.trace import emit_graph_module, module_from_spec
from purequant.trace.specs import type_name

THIS_FILE = __file__.rsplit("/", 1)[-1]


@functools.cache
def _marks() -> dict[str, int]:
    with open(__file__) as f:
        return {
            line.split("# MARK:")[1].strip(): i
            for i, line in enumerate(f, 1)
            if "# MARK:" in line and "split(" not in line
        }


def src_of(mark: str) -> str:
    return f"{THIS_FILE}:{_marks()[mark]}"


def roundtrip(model: nn.Module, *inputs: torch.Tensor, **trace_kwargs) -> purequant.Traced:
    """Trace, emit, and assert the GraphModule's outputs equal the model's bit for bit."""
    traced = purequant.trace(model, **trace_kwargs)
    check_graph(traced.graph)
    gm = purequant.to_graph_module(traced)
    with torch.no_grad():
        expected, got = model(*inputs), gm(*inputs)
    assert_same(expected, got)
    return traced


def assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    else:
        assert a == b


# ------------------------------------------------------------------------------- the zoo
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_round_trip_bit_identical(name):
    entry = ZOO[name]
    model = entry.build()
    traced = roundtrip(model, *entry.example_inputs(2), leaf_modules=entry.leaf_modules)
    assert traced.model_type == type_name(type(model))
    assert set(traced.modules) == set(traced.module_objects)
    assert repr(traced).startswith(f"<Traced {traced.model_type}: {len(traced.graph)} nodes")


# ------------------------------------------------------------------ random module graphs
class Block(nn.Module):
    """A non-leaf submodule: traced into, so its ops get its scope."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.tanh(self.fc(x)) * 0.5


OPS = ("linear", "relu", "add", "mul", "sigmoid", "cat_slice", "block", "scale", "to_dtype",
       "param", "buffer", "transpose", "center", "clamp", "const")


class RandomNet(nn.Module):
    """Interprets a recipe: each step applies an op to earlier values (look-back offsets)."""

    def __init__(self, recipe: list[tuple[str, int, int]], out: str) -> None:
        super().__init__()
        self.recipe = recipe
        self.out = out
        self.mods = nn.ModuleDict()
        for i, (op, _, _) in enumerate(recipe):
            if op == "linear":
                self.mods[f"s{i}"] = nn.Linear(8, 8)
            elif op == "block":
                self.mods[f"s{i}"] = Block()
        self.w = nn.Parameter(torch.empty(8, 8))
        self.register_buffer("shift", torch.empty(8))
        self.const = torch.linspace(-1, 1, 8)  # a plain tensor attribute

    def forward(self, x):
        vals = [x]
        for i, (op, a, b) in enumerate(self.recipe):
            u, v = vals[-1 - a % len(vals)], vals[-1 - b % len(vals)]
            if op in ("linear", "block"):
                r = self.mods[f"s{i}"](u)
            elif op == "relu":
                r = F.relu(u)
            elif op == "add":
                r = u + v
            elif op == "mul":
                r = torch.mul(u, v)
            elif op == "sigmoid":
                r = u.sigmoid()
            elif op == "cat_slice":
                r = torch.cat([u, v], dim=1)[:, 4:12]
            elif op == "scale":
                r = u * 0.25 - 1
            elif op == "to_dtype":
                r = u.to(torch.float64).to(dtype=torch.float32)
            elif op == "param":
                r = F.linear(u, self.w)
            elif op == "buffer":
                r = u + self.shift
            elif op == "transpose":
                r = u.transpose(0, 1).contiguous().transpose(0, 1)
            elif op == "center":
                r = u - u.mean(dim=-1, keepdim=True)
            elif op == "clamp":
                r = torch.clamp(u, min=-0.5, max=0.5)
            else:  # const
                r = u * self.const
            vals.append(r)
        if self.out == "tuple":
            return vals[-1], vals[len(vals) // 2]
        if self.out == "dict":
            return {"last": vals[-1], "first": vals[1]}
        return vals[-1]


def random_net(seed: int) -> RandomNet:
    rng = random.Random(seed)
    recipe = [(rng.choice(OPS), rng.randrange(4), rng.randrange(4)) for _ in range(rng.randrange(1, 25))]
    model = RandomNet(recipe, rng.choice(("tensor", "tuple", "dict")))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
    return model.eval()


@pytest.mark.parametrize("seed", range(25))
def test_random_models_round_trip_bit_identical(seed):
    model = random_net(seed)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(100 + seed))
    roundtrip(model, x)


# --------------------------------------------------------------------------------- metas
class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = torch.relu(self.fc(x))  # MARK:inner_relu
        return y + x  # MARK:inner_add


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Inner()
        self.b = Inner()
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.a(x)
        x = torch.relu(x)  # MARK:outer_relu1
        x = self.b(x)
        x = self.act(x)  # MARK:outer_act1
        x = torch.relu(x)  # MARK:outer_relu2
        return self.act(x)  # MARK:outer_act2


def _by_scope_target(traced):
    return {(n.meta.get("scope"), n.target, n.meta.get("type_index")): n for n in traced.graph}


def test_meta_scope_type_index_and_src():
    traced = purequant.trace(Outer())
    nodes = _by_scope_target(traced)
    inner_t, outer_t = type_name(Inner), type_name(Outer)
    expect = {
        ("a", "torch.relu", 0): (inner_t, "inner_relu"),
        ("a", "operator.add", 0): (inner_t, "inner_add"),
        ("b", "torch.relu", 0): (inner_t, "inner_relu"),
        ("", "torch.relu", 0): (outer_t, "outer_relu1"),
        ("", "torch.relu", 1): (outer_t, "outer_relu2"),
        ("act", "act", 0): ("torch.nn.ReLU", "outer_act1"),
        ("act", "act", 1): ("torch.nn.ReLU", "outer_act2"),
    }
    for key, (scope_type, mark) in expect.items():
        node = nodes[key]
        assert node.meta["scope_type"] == scope_type, key
        assert node.meta["src"] == src_of(mark), key
    fc = nodes[("a.fc", "a.fc", 0)]
    assert fc.op == "call_module" and fc.meta["type"] == "torch.nn.Linear"
    assert fc.meta["src"] == src_of("inner_relu")
    assert nodes[("act", "act", 0)].meta["type"] == "torch.nn.ReLU"
    x = traced.graph.node("x")
    assert x.meta["scope"] == "" and x.meta["scope_type"] == outer_t and "src" not in x.meta
    assert "type_index" not in x.meta
    assert traced.input_names == ("x",)


def test_get_attr_read_for_a_leaf_call_gets_the_callers_scope():
    class Emb(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.register_buffer("ids", torch.arange(6))

        def forward(self, x):
            return x + self.emb(self.ids)

    class Top(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e = Emb()

        def forward(self, x):
            return self.e(x)

    traced = roundtrip(Top(), torch.randn(6, 4))
    ids = next(n for n in traced.graph if n.op == "get_attr")
    assert ids.target == "e.ids" and ids.meta["scope"] == "e"


def test_print_graph_of_a_traced_model_parses_back_equal():
    for model in (Outer(), random_net(3), ZOO["bert"].build()):
        graph = purequant.trace(model).graph
        text = print_graph(graph)
        back = parse_graph(text)
        assert back == graph
        assert [n.meta for n in back] == [n.meta for n in graph]
        assert print_graph(back) == text


# ---------------------------------------------------------------- params and modules
class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8, eps=1e-3, momentum=0.2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_params_table_holds_the_users_own_tensors():
    model = ConvNet().eval()
    traced = purequant.trace(model)
    for path, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert traced.params[path] is tensor
    assert traced.module_objects["conv"] is model.conv
    assert traced.module_objects["bn"] is model.bn


def test_module_specs_of_conv_batchnorm_linear():
    traced = purequant.trace(ConvNet().eval())
    conv, bn, fc = traced.modules["conv"], traced.modules["bn"], traced.modules["fc"]
    assert conv.type == "torch.nn.Conv2d"
    assert conv.attrs["in_channels"] == 3 and conv.attrs["out_channels"] == 8
    assert conv.attrs["kernel_size"] == (3, 3) and conv.attrs["stride"] == (2, 2)
    assert conv.attrs["padding"] == (1, 1) and conv.attrs["groups"] == 1
    assert conv.attrs["padding_mode"] == "zeros" and conv.attrs["training"] is False
    assert conv.params == pmap({"weight": "conv.weight", "bias": None})
    assert not any(k.startswith("_") for k in conv.attrs)
    assert bn.type == "torch.nn.BatchNorm2d"
    assert bn.attrs["num_features"] == 8 and bn.attrs["eps"] == 1e-3 and bn.attrs["momentum"] == 0.2
    assert bn.attrs["affine"] is True and bn.attrs["track_running_stats"] is True
    assert bn.params == pmap({
        "weight": "bn.weight", "bias": "bn.bias", "running_mean": "bn.running_mean",
        "running_var": "bn.running_var", "num_batches_tracked": "bn.num_batches_tracked",
    })
    assert fc == ModuleSpec("torch.nn.Linear",
                            {"in_features": 8, "out_features": 5, "training": False},
                            {"weight": "fc.weight", "bias": "fc.bias"})


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "bert", "mlp", "digits"])
def test_emit_from_specs_alone_is_bit_identical(name):
    # No module objects: every call_module target is rebuilt from its ModuleSpec + params.
    entry = ZOO[name]
    model = entry.build()
    traced = purequant.trace(model)
    gm = emit_graph_module(traced.graph, params=traced.params, module_objects={},
                           modules=traced.modules, callables=traced.callables)
    for path, obj in traced.module_objects.items():
        rebuilt = gm.get_submodule(path)
        assert rebuilt is not obj and type(rebuilt) is type(obj)
        for k, t in rebuilt.state_dict().items():
            assert t is obj.state_dict()[k] or torch.equal(t, obj.state_dict()[k])
    x = entry.example_inputs(2)
    with torch.no_grad():
        assert_same(model(*x), gm(*x))


def test_emit_builds_purequant_fused_specs():
    # Specs a stage made (fused types, QAT form keeps bn unfolded) are built by purequant.nn.
    from purequant.stages.fuse import fuse

    entry = ZOO["digits"]
    model = entry.build().train()
    traced = purequant.trace(model)
    graph, params, modules, _ = fuse(traced.graph, traced.params, traced.modules)
    assert any(s.type.startswith("purequant.nn.ConvBn") for s in modules.values())
    unchanged = {k: v for k, v in traced.module_objects.items()
                 if traced.modules.get(k) == modules.get(k)}
    gm = emit_graph_module(graph, params=params, module_objects=unchanged, modules=modules)
    model.eval()
    gm.eval()
    x = entry.example_inputs(2)
    with torch.no_grad():
        assert_same(model(*x), gm(*x))


def test_emit_from_spec_shares_the_params_tables_tensors():
    traced = purequant.trace(ConvNet().eval())
    bn = module_from_spec(traced.modules["bn"], traced.params)
    assert bn.weight is traced.params["bn.weight"]
    assert bn.running_mean is traced.params["bn.running_mean"]
    assert bn.eps == 1e-3 and bn.momentum == 0.2 and not bn.training
    conv = module_from_spec(traced.modules["conv"], traced.params)
    assert conv.bias is None and conv.weight is traced.params["conv.weight"]


def test_emit_from_spec_unsupported_module_is_a_clear_error():
    traced = purequant.trace(ZOO["lstm"].build())
    spec = traced.modules["lstm"]  # LSTMs rebuild (test_rebuild_modules.py); this spec cannot
    spec = ModuleSpec(spec.type, spec.attrs.remove("hidden_size"), spec.params)
    with pytest.raises(TraceError, match="lstm.*hidden_size") as info:
        emit_graph_module(traced.graph, params=traced.params, module_objects={},
                          modules=pmap({**traced.modules, "lstm": spec}))
    assert info.value.node_id == "lstm"


def test_emit_without_object_or_spec_names_the_node():
    traced = purequant.trace(ConvNet())
    with pytest.raises(TraceError, match="neither a module object nor a ModuleSpec") as info:
        emit_graph_module(traced.graph, params=traced.params, module_objects={})
    assert info.value.node_id == "conv"


def test_emitted_node_names_are_the_ids_except_reserved_ones():
    graph = parse_graph(
        "%x = placeholder x()\n"
        "%sum = call_method sum(%x)\n"
        "%sum_1 = call_function operator.add(%sum, %x)\n"
        "%input = call_function torch.relu(%sum_1)\n"
        "%output = output output(%input)\n"
    )
    gm = emit_graph_module(graph, params={}, module_objects={})
    names = [n.name for n in gm.graph.nodes]
    assert names[0] == "x" and names[2] == "sum_1" and names[4] == "output"
    assert names[1] not in graph and names[1].startswith("sum_")
    assert names[3] not in graph and names[3].startswith("input_")
    x = torch.randn(4)
    assert torch.equal(gm(x), torch.relu(x.sum() + x))
    traced = purequant.trace(ConvNet())
    gm = purequant.to_graph_module(traced)
    assert [n.name for n in gm.graph.nodes] == list(traced.graph.ids())


# ------------------------------------------------------------------ constants and values
class Values(nn.Module):
    def forward(self, x):
        y = x.to(torch.float64).to(torch.device("cpu")).to(torch.float32)
        z = y.contiguous(memory_format=torch.contiguous_format)
        parts = torch.split(z, [2, 2], dim=1)
        w = torch.cat([parts[1], parts[0]], dim=1)[..., 1:3]
        c = x + torch.tensor([1.0, 2.0, 3.0, 4.0])
        return {"w": w, "c": c, "n": torch.zeros(2, dtype=torch.int64, layout=torch.strided)}


def test_named_constants_lists_slices_dicts_and_tensor_constants():
    model = Values()
    before = set(vars(model))
    traced = roundtrip(model, torch.randn(2, 4))
    text = print_graph(traced.graph)
    for sym in ("@torch.float64", "@'torch.device:cpu'", "@torch.contiguous_format"):
        assert sym in text
    assert "slice(1, 3, None)" in text and "[2, 2]" in text
    assert "_tensor_constant0" in traced.params
    assert set(vars(model)) == before and not hasattr(model, "_tensor_constant0")


def test_unrepresentable_constant_names_the_node():
    class Complex(nn.Module):
        def forward(self, x):
            return torch.mul(x, 1j)

    with pytest.raises(TraceError, match=r"node %mul .*complex") as info:
        purequant.trace(Complex())
    assert info.value.node_id == "mul"


def _hidden(x):
    return x * 2 + 1


# No importable name (its module does not exist): the graph keeps a key, callables the function.
_hidden.__module__ = "purequant_tests_nowhere"
_hidden.__qualname__ = "factory.<locals>._hidden"
torch.fx.wrap("_hidden")


def test_wrapped_function_without_importable_name_goes_to_callables():
    class UsesHidden(nn.Module):
        def forward(self, x):
            return _hidden(x) - 1

    traced = roundtrip(UsesHidden(), torch.randn(3))
    (key,) = traced.callables
    assert traced.callables[key] is _hidden
    assert any(n.target == key for n in traced.graph)


# ----------------------------------------------------------------------- untraceable
class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # MARK:datadep
            return self.fc(x)
        return x


class HasDataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.blocks = nn.ModuleList([nn.Identity(), DataDependent()])

    def forward(self, x):
        x = self.pre(x)
        for block in self.blocks:
            x = block(x)
        return x


def test_untraceable_submodule_error_names_path_class_line_and_leaf_fix():
    model = HasDataDependent()
    with pytest.raises(TraceError) as info:
        purequant.trace(model)
    text = str(info.value)
    assert "'blocks.1'" in text and type_name(DataDependent) in text
    assert f"{__file__}:{_marks()['datadep']}" in text and "if x.sum() > 0:" in text
    assert "control flow" in text
    assert "leaf_modules=(DataDependent,)" in text and "leaf_modules=('blocks.1',)" in text


def test_untraceable_root_error_suggests_concrete_args():
    with pytest.raises(TraceError, match="cannot trace the model .*DataDependent") as info:
        purequant.trace(DataDependent())
    assert "concrete_args" in str(info.value)


@pytest.mark.parametrize("leaf", [DataDependent, "blocks.1"])
def test_leaf_modules_by_class_or_path_make_it_traceable(leaf):
    model = HasDataDependent()
    traced = roundtrip(model, torch.randn(2, 4), leaf_modules=(leaf,))
    assert traced.module_objects["blocks.1"] is model.blocks[1]
    assert traced.modules["blocks.1"].type == type_name(DataDependent)
    assert traced.modules["blocks.1"].params["fc.weight"] == "blocks.1.fc.weight"


class Flagged(nn.Module):
    def forward(self, x, double=True, scale=None):
        if double:
            x = x * 2
        return x if scale is None else x * scale


def test_concrete_args_specialise_the_forward():
    traced = purequant.trace(Flagged(), concrete_args={"double": False, "scale": None})
    assert traced.input_names == ("x", "double_1", "scale_1")
    assert not any(n.target == "operator.mul" for n in traced.graph)
    gm = purequant.to_graph_module(traced)
    x = torch.randn(3)
    assert torch.equal(gm(x, False, None), x)


def test_bad_leaf_modules_and_example_inputs():
    with pytest.raises(TraceError, match="not a submodule path"):
        purequant.trace(HasDataDependent(), leaf_modules=("blocks.7",))
    with pytest.raises(TraceError, match="classes or module paths"):
        purequant.trace(HasDataDependent(), leaf_modules=(3,))
    with pytest.raises(TraceError, match="example_inputs has 2 values"):
        purequant.trace(ConvNet(), (torch.randn(1, 3, 8, 8), torch.randn(1)))
    purequant.trace(ConvNet(), torch.randn(1, 3, 8, 8))


# -------------------------------------------------------------- the model is unchanged
def _snapshot(model: nn.Module) -> dict:
    return {
        name: (m.training, sorted(vars(m)), dict(m._parameters), dict(m._buffers),
               set(m._non_persistent_buffers_set), dict(m._modules))
        for name, m in model.named_modules()
    }


class SharesLeafParams(nn.Module):
    """Reads tensors under a leaf module's path: get_attr targets below call_module targets."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.fc.register_buffer("scale", torch.full((4,), 0.5), persistent=False)

    def forward(self, x):
        return self.fc(x) * self.fc.scale + self.fc.bias


@pytest.mark.parametrize("make", [HasDataDependent, SharesLeafParams, Values, ConvNet,
                                  lambda: random_net(7), ZOO["bert"].build])
def test_model_is_not_mutated_nor_deep_copied(make, monkeypatch):
    model = make().train()
    model.pre.eval() if isinstance(model, HasDataDependent) else None
    before = _snapshot(model)
    state = model.state_dict(keep_vars=True)
    values = {k: v.detach().clone() for k, v in state.items()}

    def no_deepcopy(*args, **kwargs):
        raise AssertionError("deepcopy called")

    monkeypatch.setattr(copy, "deepcopy", no_deepcopy)
    monkeypatch.setattr(torch.Tensor, "__deepcopy__", no_deepcopy)
    monkeypatch.setattr(nn.Parameter, "__deepcopy__", no_deepcopy)
    leaves = (DataDependent,) if isinstance(model, HasDataDependent) else ()
    with pytest.raises(TraceError) if leaves else _nothing():
        purequant.trace(model)  # fails for HasDataDependent: must leave it unchanged too
    traced = purequant.trace(model, leaf_modules=leaves)
    gm = purequant.to_graph_module(traced)
    monkeypatch.undo()
    assert gm.training == model.training
    assert _snapshot(model) == before
    after = model.state_dict(keep_vars=True)
    assert after.keys() == state.keys()
    for k in state:
        assert after[k] is state[k] and torch.equal(after[k].detach(), values[k])


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_leaf_path_get_attr_installs_without_touching_the_user_module():
    model = SharesLeafParams()
    traced = roundtrip(model, torch.randn(2, 4))
    assert {n.target for n in traced.graph if n.op == "get_attr"} == {"fc.scale", "fc.bias"}
    assert "scale" in model.fc._non_persistent_buffers_set


# ------------------------------------------------------------------------------- depth
def _trace_and_emit_at_low_recursion_limit(n_nodes: int, limit: int = 250) -> int:
    model = residual_chain_for_nodes(n_nodes, kind="linear", width=4)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)  # iterative code does not care; recursive code would fail
    try:
        traced = purequant.trace(model)
        gm = purequant.to_graph_module(traced)
        text = print_graph(traced.graph)
    finally:
        sys.setrecursionlimit(old)
    assert parse_graph(text) == traced.graph
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(model(x), gm(x))
    return len(traced.graph)


def test_3k_node_chain_without_recursion_error():
    assert _trace_and_emit_at_low_recursion_limit(3_000) >= 3_000


@pytest.mark.slow
def test_30k_node_chain_without_recursion_error():
    assert _trace_and_emit_at_low_recursion_limit(30_000) >= 30_000

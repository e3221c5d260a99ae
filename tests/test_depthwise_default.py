"""The CPU-aware default keeps 7-bit inputs for fbgemm's 16-bit depthwise kernel.

On VNNI CPUs the default drops reduce_range (8-bit activations), but torch's x86 engine still
runs some depthwise convs on fbgemm's depthwise kernel, which adds pairs of u8*s8 products in
saturating 16-bit lanes. `qconfig.cpu.depthwise_16bit` says which convs; `find_quants` keeps
reduce_range on their inputs' observers. Here: the rule against the real kernel on synthetic
worst-case inputs, the plan on small models, and MobileNetV2/ResNet-18/BERT end to end.
"""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from torch import nn

import purequant
from purequant.ir import ModuleSpec
from purequant.models import ZOO
from purequant.observers.spec import ObserverSpec
from purequant.qconfig import QConfig, QConfigSpec, cpu_aware_default
from purequant.qconfig.cpu import depthwise_16bit, read_cpu_flags

FLAGS = read_cpu_flags()[0] or frozenset()
# torch routes x86 convs by AVX512-VNNI (cpuinfo_has_x86_avx512vnni), not AVX-VNNI.
AVX512_VNNI = "avx512_vnni" in FLAGS
needs_vnni = pytest.mark.skipif(not AVX512_VNNI, reason="x86 routing and the default assume AVX512-VNNI")
needs_avx2 = pytest.mark.skipif("avx2" not in FLAGS, reason="fbgemm needs AVX2")

SYMMETRIC = ObserverSpec("per_channel_minmax", "qint8", "per_channel_symmetric")
AFFINE = ObserverSpec("per_channel_minmax", "qint8", "per_channel_affine")


# ------------------------------------------------------------------ the rule vs the kernel
def conv_spec(c, groups, k=3, stride=1, pad=None, out=None, dil=1, dims=2) -> ModuleSpec:
    ks = k if isinstance(k, tuple) else (k,) * dims
    return ModuleSpec(f"torch.nn.Conv{dims}d", {
        "in_channels": c, "out_channels": out or c, "groups": groups, "kernel_size": ks,
        "stride": (stride,) * dims, "dilation": (dil,) * dims, "transposed": False,
        "padding": tuple((x - 1) // 2 for x in ks) if pad is None else pad,
        "padding_mode": "zeros", "output_padding": (0,) * dims,
    })


def kernel_error(spec: ModuleSpec, engine: str, qmax: int, symmetric: bool = True) -> float:
    """Worst error in output steps of the engine's quantized conv, every input at `qmax` and
    every weight at 127 (the largest same-sign pair sums), against the exact float conv."""
    a = spec.attrs
    dims, c, out, groups = len(a["kernel_size"]), a["in_channels"], a["out_channels"], a["groups"]
    torch.backends.quantized.engine = engine
    x = torch._make_per_tensor_quantized_tensor(
        torch.full((1, c) + (9,) * dims, qmax, dtype=torch.uint8), 0.02, 0)
    zp = torch.zeros(out, dtype=torch.long) + (0 if symmetric else 1)
    w = torch._make_per_channel_quantized_tensor(
        torch.full((out, c // groups, *a["kernel_size"]), 127, dtype=torch.int8),
        torch.full((out,), 0.01, dtype=torch.double), zp, 0)
    args = (list(a["stride"]), list(a["padding"]), list(a["dilation"]), groups)
    ops = torch.ops.quantized
    prepack, conv = (ops.conv2d_prepack, ops.conv2d) if dims == 2 else (ops.conv3d_prepack, ops.conv3d)
    fconv = nn.functional.conv2d if dims == 2 else nn.functional.conv3d
    exact = fconv(x.dequantize(), w.dequantize(), None, *args)
    scale = exact.abs().max().item() / 255 * 1.01
    got = conv(x, prepack(w, None, *args), scale, 0).dequantize()
    return ((got - exact).abs().max() / scale).item()


SHAPES = {
    "dw 8": conv_spec(8, 8), "dw 12": conv_spec(12, 12), "dw 96": conv_spec(96, 96),
    "dw 104": conv_spec(104, 104), "dw 108": conv_spec(108, 108),
    "dw 144 k5": conv_spec(144, 144, k=5), "dw 144 k9": conv_spec(144, 144, k=9),
    "dw 144 k3x5": conv_spec(144, 144, k=(3, 5)), "dw 144 stride 2": conv_spec(144, 144, stride=2),
    "dw 144 stride 3": conv_spec(144, 144, stride=3), "dw 144 pad 0": conv_spec(144, 144, pad=(0, 0)),
    "dw 144 dilation 2": conv_spec(144, 144, dil=2, pad=(2, 2)),
    "dw 144 x2": conv_spec(144, 144, out=288), "dw 144 x3": conv_spec(144, 144, out=432),
    "grouped 144/72": conv_spec(144, 72), "dense 64": conv_spec(64, 1),
    "dw3d 64": conv_spec(64, 64, dims=3), "dw3d 144 k5x3x3": conv_spec(144, 144, k=(5, 3, 3), dims=3),
}


@needs_avx2
@pytest.mark.parametrize("backend", ["x86", "fbgemm"])
def test_rule_predicts_which_convs_saturate(backend):
    if backend == "x86" and not AVX512_VNNI:
        pytest.skip("x86 sends every conv to fbgemm without AVX512-VNNI")
    torch.set_num_threads(1)
    wrong = {}
    for name, spec in SHAPES.items():
        predicted = depthwise_16bit(backend, spec, SYMMETRIC) is not None
        saturates = kernel_error(spec, backend, 255) > 2
        if predicted != saturates:
            wrong[name] = f"predicted {predicted}, kernel saturates: {saturates}"
        if predicted:
            assert kernel_error(spec, backend, 127) <= 1, f"{name}: 7-bit inputs must be exact"
    assert not wrong


@needs_avx2
@needs_vnni
def test_x86_sends_asymmetric_weights_to_fbgemm():
    spec = SHAPES["dw 96"]
    assert depthwise_16bit("x86", spec, SYMMETRIC) is None and kernel_error(spec, "x86", 255) <= 1
    assert "asymmetric" in depthwise_16bit("x86", spec, AFFINE)
    assert kernel_error(spec, "x86", 255, symmetric=False) > 2


def test_other_backends_never_narrow():
    for backend in ("qnnpack", "onednn", "reference"):
        assert depthwise_16bit(backend, SHAPES["dw 144 k5"], AFFINE) is None


# ------------------------------------------------------------------ the plan on small models
def vnni_default(backend: str = "x86") -> QConfigSpec:
    return cpu_aware_default(backend, flags={"avx2", "avx512_vnni"}).spec


def old_default(backend: str = "x86") -> QConfigSpec:
    """The CPU-aware default as it was before: reduce_range dropped everywhere."""
    return vnni_default(backend).map_qconfigs(lambda q: attrs.evolve(q, narrow_16bit_inputs=False))


def small(first: nn.Module, channels: int) -> nn.Module:
    return nn.Sequential(first, nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
                         nn.Conv2d(channels, 8, 1)).eval()


def x_of(channels: int) -> tuple[torch.Tensor]:
    return (torch.rand(1, channels, 6, 6, generator=torch.Generator().manual_seed(0)),)


def test_default_narrows_the_producer_of_a_144_channel_depthwise_input():
    p = purequant.prepare(small(nn.ReLU(), 144), vnni_default(), x_of(144))
    plan = p.records["find_quants"]
    # the relu shares the input's observer, so the graph input's observer is narrowed
    assert set(plan.narrowed) == {"input_1"} and plan.narrowed["input_1"][0] == "_1"
    assert plan.observe["input_1"].spec.reduce_range and not plan.observe["_1"].spec.reduce_range
    assert "kept at 7 bits (reduce_range)" in p.explain("_1") and "144 > 100 groups" in p.explain("_1")
    assert "kept at 7 bits (reduce_range) for %_1" in p.explain("input_1")


def test_no_narrowing_below_101_groups_on_x86_but_on_fbgemm():
    x86 = purequant.prepare(small(nn.ReLU(), 32), vnni_default("x86"), x_of(32))
    fbgemm = purequant.prepare(small(nn.ReLU(), 32), vnni_default("fbgemm"), x_of(32), backend="fbgemm")
    assert not x86.records["find_quants"].narrowed
    assert set(fbgemm.records["find_quants"].narrowed) == {"input_1"}


def test_explicit_full_range_qconfigs_are_kept():
    """Only qconfigs that ask (the CPU-aware default) are narrowed: torch.ao's onednn mapping,
    used on x86, does what it says (lowering notes the saturation)."""
    from torch.ao.quantization import get_default_qconfig_mapping

    p = purequant.prepare(small(nn.ReLU(), 144), get_default_qconfig_mapping("onednn"), x_of(144))
    assert not p.records["find_quants"].narrowed
    p = purequant.prepare(small(nn.ReLU(), 144), old_default(), x_of(144))
    assert not p.records["find_quants"].narrowed


def test_fixed_qparams_are_noted_not_narrowed():
    p = purequant.prepare(small(nn.Sigmoid(), 144), vnni_default(), x_of(144))
    plan = p.records["find_quants"]
    assert not plan.narrowed and plan.observe["_0"].spec.kind == "fixed"
    assert "asked for 7 bits" in plan.notes["_0"] and "its range is set" in plan.notes["_0"]


def test_flag_round_trips_and_is_deterministic():
    spec = vnni_default()
    assert spec.global_qconfig.narrow_16bit_inputs
    assert QConfigSpec.from_json(spec.to_json()) == spec
    plain = QConfig(spec.global_qconfig.activation, spec.global_qconfig.weight)
    assert "narrow_16bit_inputs" not in plain.to_json()  # other qconfigs' JSON is unchanged
    a, b = (purequant.prepare(small(nn.ReLU(), 144), spec, x_of(144)) for _ in range(2))
    assert a.records["find_quants"] == b.records["find_quants"]


# ------------------------------------------------------------------ the zoo
def sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    noise = (ref.double() - out.double()).norm().item()
    return math.inf if noise == 0 else 20 * math.log10(ref.double().norm().item() / noise)


@pytest.mark.parametrize("name", ["resnet18", "bert"])
def test_models_without_fbgemm_depthwise_convs_are_unchanged(name):
    """Same observers, same graph as the default before this rule: the same numerics."""
    entry = ZOO[name]
    new = purequant.prepare(entry.build(), vnni_default(), entry.example_inputs(1))
    old = purequant.prepare(entry.build(), old_default(), entry.example_inputs(1))
    assert not new.records["find_quants"].narrowed
    assert new.records["insert_observers"] == old.records["insert_observers"]
    assert new.graph == old.graph


@needs_vnni
@torch.no_grad()
def test_mobilenet_v2_native_matches_the_reference_lowering():
    torch.set_num_threads(1)
    entry = ZOO["mobilenet_v2"]
    model, x = entry.build(), entry.example_inputs(8)
    p = purequant.prepare(model, None, entry.example_inputs(1))
    # every depthwise conv with more than 100 channels: 144 (2), 192 (3), 384 (4), 576 (3), 960 (3)
    readers = {r for r, _ in p.records["find_quants"].narrowed.values()}
    assert len(readers) == 15 and all(r.endswith("_conv_1_0") for r in readers)
    p = purequant.calibrate(p, entry.calibration_batches(4))
    native, reference = purequant.convert(p), purequant.convert(p, reference=True)
    ref = model(*x)
    native_db, reference_db = sqnr(ref, native(*x)), sqnr(ref, reference(*x))
    assert native_db > reference_db - 1.0, (native_db, reference_db)
    assert max(conv_errors(native, entry.example_inputs(2)).values()) <= 1  # nothing saturates


class _ConvCheck(torch.fx.Interpreter):
    """Runs a native module; for each quantized conv, the worst difference in output steps
    from the exact result on the same quantized input (dequantize, float conv, quantize)."""

    errors: dict[str, int]

    def run_node(self, n: torch.fx.Node):
        out = super().run_node(n)
        if n.op == "call_function" and str(n.target).startswith("quantized.conv2d"):
            x, packed, scale, zp = (self.env[a] if isinstance(a, torch.fx.Node) else a for a in n.args)
            w, b = packed.unpack()
            exact = nn.functional.conv2d(x.dequantize(), w.dequantize(), b, packed.stride(),
                                         packed.padding(), packed.dilation(), packed.groups())
            exact = exact.relu() if "relu" in str(n.target) else exact
            q = torch.quantize_per_tensor(exact, scale, zp, torch.quint8)
            self.errors[n.name] = (out.int_repr().int() - q.int_repr().int()).abs().max().item()
        return out


def conv_errors(module: torch.fx.GraphModule, inputs) -> dict[str, int]:
    check = _ConvCheck(module)
    check.errors = {}
    check.run(*inputs)
    return check.errors

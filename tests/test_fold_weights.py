"""The fold_weights stage: constant weight chains evaluated once, shared weights, laws."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from lowering_kit import (
    api_qparams,
    lower_prepared,
    op_counts,
    run,
    snapshot,
    sqnr,
    torchao_convert,
    unchanged,
)
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping

import purequant.api as api
from purequant.backends import quantized_engine
from purequant.errors import StageError
from purequant.ir import check_graph, parse_graph, print_graph
from purequant.lowering import lowered_module
from purequant.models import ZOO
from purequant.stages.fold_weights import fold_weights

torch.set_num_threads(1)


def _prepared(model: nn.Module, inputs: tuple, mapping=None, n: int = 4):
    gen = torch.Generator().manual_seed(3)
    batches = [tuple(torch.randn(t.shape, generator=gen) for t in inputs) for _ in range(n)]
    mapping = mapping or get_default_qconfig_mapping("x86")
    return api.calibrate(api.prepare(model, mapping, inputs), batches), mapping, batches


def _digits(target: str):
    entry = ZOO["digits"]
    prepared = api.calibrate(api.prepare(entry.build(), get_default_qconfig_mapping("x86"), entry.example_inputs(2)),
                             entry.calibration_batches(4, 4))
    return lower_prepared(prepared, api_qparams(prepared), target), entry.example_inputs(4)


# ------------------------------------------------------------------------------- golden
BEFORE = """
%x = placeholder x()
%w = get_attr w()
%b = get_attr b()
%w_q = call_function torch.quantize_per_tensor(%w, 0.05, 0, @torch.qint8)
%packed = call_function torch.ops.quantized.linear_prepack(%w_q, %b)
%x_q = call_function torch.quantize_per_tensor(%x, 0.1, 128, @torch.quint8)
%y = call_function torch.ops.quantized.linear(%x_q, %packed, 0.2, 128)
%y_f = call_function torch.dequantize(%y)
%output = output output(%y_f)
"""
AFTER = """
#! ids: b=0, w=0, w_q=0
%x = placeholder x()
%packed = get_attr _folded.w_packed()  # folded_from='torch.ops.quantized.linear_prepack'
%x_q = call_function torch.quantize_per_tensor(%x, 0.1, 128, @torch.quint8)
%y = call_function torch.ops.quantized.linear(%x_q, %packed, 0.2, 128)
%y_f = call_function torch.dequantize(%y)
%output = output output(%y_f)
"""


def test_golden_linear_chain():
    graph = parse_graph(textwrap.dedent(BEFORE))
    params = {"w": torch.randn(3, 4), "b": torch.randn(3)}
    from pyrsistent import pmap

    new, new_params, rec = fold_weights(graph, pmap(params))
    assert print_graph(new).strip() == textwrap.dedent(AFTER).strip()
    assert [(f.node, f.path, f.chain, f.sources) for f in rec.folds] == [
        ("packed", "_folded.w_packed", ("w_q", "packed"), ("w", "b"))]
    assert rec.dropped == ("w", "b", "w_q") and rec.engine == torch.backends.quantized.engine
    x = torch.randn(2, 4)
    before = lowered_module(graph, params, {})(x)
    assert torch.equal(lowered_module(new, new_params, {})(x), before)


def test_failure_names_the_node():
    graph = parse_graph(textwrap.dedent("""
        %w = get_attr w()
        %packed = call_function torch.ops.quantized.linear_prepack(%w)
        %output = output output(%packed)
    """))
    from pyrsistent import pmap

    with pytest.raises(StageError) as e:
        fold_weights(graph, pmap({"w": torch.randn(3, 4)}))  # a float weight: prepack refuses
    assert e.value.node_id == "packed" and "engine" in e.value.message


# ------------------------------------------------------------------------------ models
def test_native_digits():
    low, inputs = _digits("native")
    before = snapshot(low.graph, low.params)
    graph, params, rec = fold_weights(low.graph, low.params)
    assert unchanged(before, low.graph, low.params)  # pure
    check_graph(graph)
    assert len(rec.folds) == 5 and {f.target.rsplit(".", 1)[-1] for f in rec.folds} == {"conv2d_prepack", "linear_prepack"}
    assert not any("prepack" in k or "quantize_per_channel" in k for k in op_counts(graph, ""))
    assert all(isinstance(params[f.path], torch.ScriptObject) for f in rec.folds)
    assert set(params) - set(low.params) == {f.path for f in rec.folds}
    unfolded = lowered_module(low.graph, low.params, low.modules)
    assert torch.equal(run(lowered_module(graph, params, low.modules), inputs), run(unfolded, inputs))
    again, again_params, again_rec = fold_weights(graph, params)  # nothing left: the same objects
    assert again is graph and again_params is params and again_rec.folds == ()


def test_reference_digits_stores_int8_weights():
    low, inputs = _digits("reference")
    graph, params, rec = fold_weights(low.graph, low.params)
    assert len(rec.folds) == 5 and rec.engine is None
    assert all(params[f.path].dtype == torch.int8 for f in rec.folds)
    q = op_counts(graph, "torch.ops.quantized_decomposed.")
    assert q["dequantize_per_channel"] == 5 and q["quantize_per_channel"] == 0
    assert torch.equal(run(lowered_module(graph, params, low.modules), inputs, engine=None),
                       run(lowered_module(low.graph, low.params, low.modules), inputs, engine=None))


def test_deterministic():
    low, _ = _digits("native")
    a, b = fold_weights(low.graph, low.params), fold_weights(low.graph, low.params)
    assert a[0] == b[0] and a[2] == b[2]


def test_float_graph_is_left_alone():
    traced = api.trace(ZOO["mlp"].build())
    graph, params, rec = fold_weights(traced.graph, traced.params)
    assert graph is traced.graph and params is traced.params and rec.folds == ()


@pytest.mark.parametrize("engine", ["qnnpack", "onednn"])
def test_packs_for_the_engine_in_effect(engine):
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"no {engine} engine")
    entry = ZOO["mlp"]
    prepared = api.calibrate(api.prepare(entry.build(), get_default_qconfig_mapping(engine), entry.example_inputs(2),
                                         backend=engine), entry.calibration_batches(4, 4))
    low = lower_prepared(prepared, api_qparams(prepared), backend=engine)
    with quantized_engine(engine):
        graph, params, rec = fold_weights(low.graph, low.params)
    assert rec.engine == engine
    inputs = entry.example_inputs(4)
    with torch.no_grad():
        want = entry.build()(*inputs)
    assert sqnr(want, run(lowered_module(graph, params, low.modules), inputs, engine=engine)) >= 20


def test_long_chain_folds_without_recursion():
    entry = ZOO["chain_linear"]  # 100 linear layers: 100 independent chains, one sweep
    prepared = api.calibrate(api.prepare(entry.build(), get_default_qconfig_mapping("x86"), entry.example_inputs(2)),
                             entry.calibration_batches(2, 2))
    low = lower_prepared(prepared, api_qparams(prepared))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(120)
    try:
        _, _, rec = fold_weights(low.graph, low.params)
    finally:
        sys.setrecursionlimit(limit)
    assert len(rec.folds) == 100


# ------------------------------------------------------------------------- shared weights
class SharedParam(nn.Module):
    """One parameter read by a quantized F.linear and by a float F.linear."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(8, 8, generator=gen) / 3)
        self.b = nn.Parameter(torch.randn(8, generator=gen) / 3)

    def forward(self, x):
        return F.linear(x, self.w, self.b) + F.linear(torch.sigmoid(x), self.w, self.b)


class ModuleWeightReused(nn.Module):
    """A Linear module's weight and bias also read by a functional linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x) + F.linear(x, self.fc.weight, self.fc.bias)


def _second_linear_float():
    return get_default_qconfig_mapping("x86").set_module_name_object_type_order("", F.linear, 1, None)


CASES = {
    "param_quantized_and_float": (SharedParam, _second_linear_float, KeyError, "w"),
    "module_weight_reused": (ModuleWeightReused, lambda: get_default_qconfig_mapping("x86"), TypeError, "not method"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_torchao_fails_on_shared_weights(case):
    """The baseline: torch.ao 2.13's convert_fx (or its converted model) crashes here."""
    cls, mapping, error, text = CASES[case]
    x = (torch.randn(4, 8, generator=torch.Generator().manual_seed(0)),)
    with pytest.raises(error, match=text):
        run(torchao_convert(cls().eval(), mapping(), x, [x]), x)


@pytest.mark.parametrize("target", ["native", "reference"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_shared_weights(case, target):
    cls, mapping, _, _ = CASES[case]
    model = cls().eval()
    prepared, _, batches = _prepared(model, (torch.zeros(4, 8),), mapping(), n=8)
    x = batches[-1]  # in the calibrated range
    low = lower_prepared(prepared, api_qparams(prepared), target)
    graph, params, rec = fold_weights(low.graph, low.params)
    assert len(rec.folds) == 1  # one quantized (and packed) copy of the shared weight
    source = rec.folds[0].sources[0]
    assert params[source] is prepared.state.params[source]  # the parameter itself is untouched
    if case == "param_quantized_and_float":  # the float reader keeps reading the parameter
        readers = [n for n in graph.node_list() if n.target == "torch.nn.functional.linear"]
        assert any(graph.node(r.args[1].id).target == "w" for r in readers)
    gm = lowered_module(graph, params, low.modules)
    with torch.no_grad():
        want = model(*x)
    got = run(gm, x, engine="x86" if target == "native" else None)
    assert sqnr(want, got) >= 25

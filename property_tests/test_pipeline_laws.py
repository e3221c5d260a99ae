"""Laws of the whole prepare/calibrate/convert pipeline on random real models.

- observing never changes a float output (bit-identical to the same graph without observers);
- prepare and calibrate are pure (the model, its tensors and the Prepared value are unchanged)
  and deterministic (same model and config -> equal graphs and records);
- convert gives a well-formed quantized model within quantization error of float, in which
  every quantize feeds a consumer of quantized values and no dequantize -> quantize pair with
  equal qparams remains;
- native and reference lowerings agree within quantization error.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import purequant
from purequant.calibration import strip_observers
from purequant.ir import check_graph, print_graph
from purequant.observers import ObserverSpec
from purequant.qconfig import QConfig
from purequant.testing.models import build_model, example_input, model_recipes
from purequant.trace import emit_graph_module

torch.set_num_threads(1)

ACT = {
    "minmax": ObserverSpec("minmax"),
    "histogram": ObserverSpec("histogram"),
    "moving_average_minmax": ObserverSpec("moving_average_minmax", options={"averaging_constant": 0.01}),
}
WEIGHT = {
    "per_tensor": ObserverSpec("minmax", dtype="qint8", qscheme="per_tensor_symmetric"),
    "per_channel": ObserverSpec("per_channel_minmax", dtype="qint8", qscheme="per_channel_symmetric"),
}
qconfigs = st.builds(lambda a, w: QConfig(activation=ACT[a], weight=WEIGHT[w]), st.sampled_from(sorted(ACT)), st.sampled_from(sorted(WEIGHT)))
SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _batches(x: torch.Tensor, n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(x.shape, generator=g) for _ in range(n)]


def _state(model: torch.nn.Module) -> dict:
    return {k: (v.clone(), v._version) for k, v in model.state_dict(keep_vars=True).items()}


def _unchanged(model: torch.nn.Module, before: dict) -> bool:
    after = model.state_dict(keep_vars=True)
    return after.keys() == before.keys() and all(
        torch.equal(after[k], v) and after[k]._version == ver for k, (v, ver) in before.items()
    )


def _sqnr(ref: torch.Tensor, got: torch.Tensor) -> float:
    noise = (ref - got).norm()
    return float("inf") if noise == 0 else float(20 * torch.log10(ref.norm() / noise))


@SETTINGS
@given(recipe=model_recipes(), qconfig=qconfigs)
def test_observing_is_the_identity_on_float_values(recipe, qconfig):
    model, x = build_model(recipe), example_input(recipe)
    p = purequant.prepare(model, qconfig, (x,))
    check_graph(p.graph)
    fused = emit_graph_module(strip_observers(p.graph), params=p.state.params, module_objects={}, modules=p.state.modules)
    with torch.no_grad():
        assert torch.equal(p.observed_module(lambda v, key: v)(x), fused(x))
        assert torch.allclose(fused(x), model(x), rtol=1e-4, atol=1e-5)


@SETTINGS
@given(recipe=model_recipes(), qconfig=qconfigs)
def test_prepare_and_calibrate_are_pure_and_deterministic(recipe, qconfig):
    model, x = build_model(recipe), example_input(recipe)
    before = _state(model)
    p1 = purequant.prepare(model, qconfig, (x,))
    p2 = purequant.prepare(model, qconfig, (x,))
    assert print_graph(p1.graph) == print_graph(p2.graph)
    assert [r.record for r in p1.stage_records] == [r.record for r in p2.stage_records]
    graph_text = print_graph(p1.graph)
    c = purequant.calibrate(p1, _batches(x))
    assert print_graph(p1.graph) == graph_text and p1.stats.batches == 0 and c.stats.batches == 3
    assert _unchanged(model, before)


@SETTINGS
@given(recipe=model_recipes(), qconfig=qconfigs)
def test_convert_is_well_formed_and_close_to_float(recipe, qconfig):
    model, x = build_model(recipe), example_input(recipe)
    before = _state(model)
    p = purequant.calibrate(purequant.prepare(model, qconfig, (x,)), _batches(x) + [x])
    stats_before = p.stats
    native = purequant.convert(p)
    reference = purequant.convert(p, reference=True)
    q = purequant.quantized_record(native)
    check_graph(q.graph)
    check_graph(q.folded_graph)
    _no_redundant_requantize(q.folded_graph)
    with torch.no_grad():
        ref, got, got_ref = model(x), native(x), reference(x)
    if qconfig.activation.kind == "minmax":
        # Only min/max ranges provably cover the evaluated batch (it was calibrated on); moving
        # averages and histogram searches may clip a tiny tensor by design.
        assert _sqnr(ref, got) > 10, "native lowering far from float"
    assert _sqnr(got_ref, got) > 25, "native and reference lowerings disagree beyond quantization error"
    assert p.stats is stats_before and _unchanged(model, before)


QUANTIZE = ("torch.quantize_per_tensor", "torch.quantize_per_channel")


def _no_redundant_requantize(graph) -> None:
    """No dequantize whose only reader re-quantizes it with the same constant qparams."""
    for node in graph.node_list():
        if node.op == "call_function" and node.target in QUANTIZE and node.args:
            src = graph.node(node.args[0].id) if hasattr(node.args[0], "id") else None
            if src is not None and (src.target == "torch.dequantize" or (src.op == "call_method" and src.target == "dequantize")):
                inner = graph.node(src.args[0].id)
                assert not (inner.op == "call_function" and inner.target in QUANTIZE and inner.args[1:] == node.args[1:]), (
                    f"%{src.id} -> %{node.id} dequantizes and re-quantizes with equal qparams"
                )

"""prepare / calibrate / observe_batch / merge_stats / explain, end to end on zoo models."""

from __future__ import annotations

import pytest
import torch

import purequant
from purequant.api import calibrate, observe_batch, prepare
from purequant.calibration import empty_stats, merge_stats, strip_observers
from purequant.errors import ConfigError, PurequantError
from purequant.models import ZOO
from purequant.observers import ObserverSpec, qparams
from purequant.qconfig import QConfig
from purequant.trace import emit_graph_module

torch.set_num_threads(1)

MINMAX = QConfig(
    activation=ObserverSpec("minmax", dtype="quint8", qscheme="per_tensor_affine"),
    weight=ObserverSpec("per_channel_minmax", dtype="qint8", qscheme="per_channel_symmetric"),
)


def _snapshot(model: torch.nn.Module) -> dict:
    return {
        "state": {k: (v.clone(), v._version) for k, v in model.state_dict(keep_vars=True).items()},
        "attrs": {name: sorted(vars(m)) for name, m in model.named_modules()},
        "training": model.training,
    }


def _same(a: dict, b: dict) -> bool:
    return (
        a["attrs"] == b["attrs"]
        and a["training"] == b["training"]
        and a["state"].keys() == b["state"].keys()
        and all(torch.equal(a["state"][k][0], b["state"][k][0]) and a["state"][k][1] == b["state"][k][1] for k in a["state"])
    )


@pytest.fixture(scope="module")
def digits():
    entry = ZOO["digits"]
    return entry, entry.build()


def test_prepare_does_not_touch_the_model(digits):
    entry, model = digits
    before = _snapshot(model)
    p = prepare(model, MINMAX, entry.example_inputs())
    calibrate(p, entry.calibration_batches(2))
    assert _same(before, _snapshot(model))


def test_observing_leaves_float_outputs_bit_identical(digits):
    """Observers are identities on values: the observed model, while observing, computes
    exactly what the fused float graph computes; fusion itself stays within float rounding."""
    entry, model = digits
    p = prepare(model, MINMAX, entry.example_inputs())
    x = entry.example_inputs()
    seen = []

    def collector(value, key):
        seen.append(key)
        return value

    fused = strip_observers(p.graph)
    assert fused is not p.graph and len(fused) == len(p.graph) - len(p.stats.specs)
    fused_gm = emit_graph_module(
        fused, params=p.state.params, module_objects={}, modules=p.state.modules
    )
    with torch.no_grad():
        observed, plain, ref = p.observed_module(collector)(*x), fused_gm(*x), model(*x)
    assert torch.equal(observed, plain)
    assert set(seen) == set(p.stats.specs)
    assert torch.allclose(plain, ref, rtol=1e-5, atol=1e-6)


def test_stage_records_name_every_prepare_stage(digits):
    entry, model = digits
    p = prepare(model, MINMAX, entry.example_inputs())
    names = [r.name for r in p.stage_records]
    assert names == ["fuse", "generate_qconfig_map", "find_matches", "find_quants", "insert_observers"]
    assert p.records["fuse"].fusions, "digits CNN has conv-bn-relu blocks to fuse"


def test_calibrate_returns_a_new_value_and_keeps_the_old(digits):
    entry, model = digits
    p = prepare(model, MINMAX, entry.example_inputs())
    p2 = calibrate(p, entry.calibration_batches(3))
    assert p.stats.batches == 0 and p2.stats.batches == 3
    assert p.stats.stats == empty_stats(p.stats.specs).stats  # the old value saw nothing
    assert p2.stats.stats != p.stats.stats
    some = next(iter(p2.stats.specs))
    with pytest.raises(PurequantError):
        qparams(p.stats.specs[some], p.stats.stats[some])  # the old value saw nothing


def test_sharded_calibration_equals_sequential(digits):
    entry, model = digits
    p = prepare(model, MINMAX, entry.example_inputs())
    batches = list(entry.calibration_batches(4))
    whole = calibrate(p, batches).stats
    shards = [observe_batch(p, b) for b in batches]
    merged = merge_stats(merge_stats(shards[0], shards[1]), merge_stats(shards[2], shards[3]))
    assert merged.batches == 4
    for oid, spec in whole.specs.items():
        assert qparams(spec, merged.stats[oid]) == qparams(spec, whole.stats[oid]), oid


def test_explain_tells_the_story_of_a_fused_conv(digits):
    entry, model = digits
    p = prepare(model, MINMAX, entry.example_inputs())
    fused = p.records["fuse"].fusions[0]
    text = p.explain(fused.node)
    assert "fuse:" in text and "qconfig: global" in text and "match: pattern" in text and "observer:" in text
    folded = p.explain(fused.nodes[1])
    assert f"folded into %{fused.node}" in folded and "removed by fuse" in folded
    assert "no pattern covers" not in folded
    observer = next(iter(p.stats.specs))
    text = p.explain(observer)
    assert text.startswith(f"%{observer} = call_function purequant.observe") and "observer of %" in text


def test_skipping_a_module_by_name_leaves_it_float(digits):
    entry, model = digits
    first = prepare(model, MINMAX, entry.example_inputs()).records["fuse"].fusions[0].node
    path = prepare(model, MINMAX, entry.example_inputs()).graph.node(first).target
    p = prepare(model, {"": MINMAX, "module_name": [(path, None)]}, entry.example_inputs())
    text = p.explain(first)
    assert "module_name" in text and "float" in text.lower()


def test_nan_during_calibration_names_the_observer(digits):
    entry, model = digits
    p = prepare(model, MINMAX, entry.example_inputs())
    bad = entry.example_inputs()[0].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(PurequantError, match="observer %"):
        calibrate(p, [bad])


def test_bad_backend_and_custom_config_keys(digits):
    entry, model = digits
    with pytest.raises(ConfigError, match="unknown backend"):
        prepare(model, MINMAX, entry.example_inputs(), backend="tpu")
    with pytest.raises(ConfigError, match="custom_config key"):
        prepare(model, MINMAX, entry.example_inputs(), custom_config={"leaf_module": ()})


def test_model_on_two_devices_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)).eval()
    model[1].to("meta")
    with pytest.raises(ConfigError, match="several devices"):
        prepare(model, MINMAX, (torch.zeros(1, 4),))


def test_unknown_qconfig_key_is_a_clear_error(digits):
    entry, model = digits
    with pytest.raises(PurequantError, match="object_types|object_type"):
        prepare(model, {"": MINMAX, "object_types": []}, entry.example_inputs())


def test_purequant_exports_the_api():
    for name in ("prepare", "calibrate", "observe_batch", "merge_stats", "Prepared"):
        assert hasattr(purequant, name), name


def test_training_mode_model_is_refused_and_left_alone(digits):
    entry, _ = digits
    model = entry.build().train()
    before = _snapshot(model)
    with pytest.raises(ConfigError, match="training mode") as info:
        prepare(model, MINMAX, entry.example_inputs())
    assert "model.eval()" in info.value.hint
    assert _same(before, _snapshot(model))


def test_custom_module_types_accept_classes(digits):
    entry, model = digits
    p = prepare(model, MINMAX, entry.example_inputs(), custom_config={"custom_module_types": [torch.nn.MaxPool2d]})
    options = next(r.options for r in p.stage_records if r.name == "find_matches")
    assert options["custom_modules"] == ("torch.nn.MaxPool2d",)


def test_torchao_prepare_custom_config_object_gets_a_clear_error(digits):
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig

    entry, model = digits
    with pytest.raises(ConfigError, match="custom_config must be a dict") as info:
        prepare(model, MINMAX, entry.example_inputs(), custom_config=PrepareCustomConfig())
    assert "migration" in info.value.hint

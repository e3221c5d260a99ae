"""convert / quantize / quantize_dynamic: the API contract.

One calibrated Prepared converts many times (other qconfigs, backends, reference) without
calibrating again; nothing given is changed; bad requests fail with errors naming the node.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import purequant
from purequant.errors import PurequantError, StageError
from purequant.ir import print_graph
from purequant.models import ZOO
from purequant.observers import ObserverSpec
from purequant.qconfig import QConfig

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

MINMAX = QConfig(
    activation=ObserverSpec("minmax"),
    weight=ObserverSpec("per_channel_minmax", dtype="qint8", qscheme="per_channel_symmetric"),
)
HIST = QConfig(activation=ObserverSpec("histogram"), weight=MINMAX.weight)


@pytest.fixture(scope="module")
def calibrated():
    entry = ZOO["digits"]
    model = entry.build()
    p = purequant.calibrate(purequant.prepare(model, MINMAX, entry.example_inputs()), entry.calibration_batches(4))
    return entry, model, p


def _sqnr(ref, got):
    return float(20 * torch.log10(ref.norm() / (ref - got).norm()))


def _quantized_ops(module) -> int:
    graph = purequant.quantized_record(module).folded_graph
    return sum(1 for n in graph.node_list() if n.target.startswith("torch.ops.quantized."))


def test_convert_many_ways_from_one_calibration(calibrated):
    entry, model, p = calibrated
    x = entry.example_inputs()
    text, stats = print_graph(p.graph), p.stats
    native = purequant.convert(p)
    reference = purequant.convert(p, reference=True)
    skip_head = purequant.convert(p, qconfig={"": MINMAX, "module_name": [("classifier", None)]})
    with torch.no_grad():
        y, a, b, c = model(*x), native(*x), reference(*x), skip_head(*x)
    assert _sqnr(y, a) > 25 and _sqnr(y, b) > 25 and _sqnr(y, c) > 25
    assert _sqnr(a, b) > 30, "reference and native lowerings agree within quantization error"
    assert _quantized_ops(skip_head) < _quantized_ops(native)
    assert _quantized_ops(reference) == 0, "the reference lowering uses no quantized kernels"
    assert print_graph(p.graph) == text and p.stats is stats, "convert does not change the Prepared value"


def test_convert_before_calibration_names_a_node_and_what_to_do():
    entry = ZOO["digits"]
    p = purequant.prepare(entry.build(), MINMAX, entry.example_inputs())
    with pytest.raises(StageError, match="before calibration") as info:
        purequant.convert(p)
    assert info.value.node_id and "calibrate" in str(info.value)


def test_convert_time_qconfig_needing_new_statistics_is_refused(calibrated):
    _, _, p = calibrated
    with pytest.raises(StageError, match="never gathered") as info:
        purequant.convert(p, qconfig=HIST)
    assert info.value.node_id and info.value.hint


def test_backend_without_a_kernel_for_the_dtype_keeps_the_op_float_and_says_why():
    entry = ZOO["digits"]
    fp16_static = QConfig(
        activation=ObserverSpec("minmax", dtype="qint8", qscheme="per_tensor_symmetric"),
        weight=ObserverSpec("minmax", dtype="qint8", qscheme="per_tensor_symmetric"),
    )
    model = entry.build()
    p = purequant.calibrate(purequant.prepare(model, fp16_static, entry.example_inputs()), entry.calibration_batches(2))
    q = purequant.convert(p)
    skipped = p.records["find_matches"].skipped
    assert skipped and all("not supported" in why for why in skipped.values())
    with torch.no_grad():
        assert torch.allclose(q(*entry.example_inputs()), model(*entry.example_inputs()), rtol=1e-4, atol=1e-5)


def test_quantize_one_call_and_records_reachable():
    entry = ZOO["mlp"]
    model = entry.build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = purequant.quantize(model, entry.example_inputs(), entry.calibration_batches(4), MINMAX)
    record = purequant.quantized_record(q)
    names = [r.name for r in record.stage_records]
    assert names[:5] == ["fuse", "generate_qconfig_map", "find_matches", "find_quants", "insert_observers"]
    assert names[5:] == ["lower", "fold_weights", "eliminate_dead_code"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert _sqnr(model(*entry.example_inputs()), q(*entry.example_inputs())) > 18


def test_quantized_record_of_a_foreign_module_is_a_clear_error():
    with pytest.raises(PurequantError, match="not made by purequant"):
        purequant.quantized_record(torch.fx.symbolic_trace(torch.nn.Linear(2, 2)))


def test_convert_dumps_replay_exactly(tmp_path, calibrated):
    _, _, p = calibrated
    purequant.convert(p, dump_dir=str(tmp_path))
    stages = sorted(d.name for d in tmp_path.iterdir() if d.name != "tensors")
    assert stages == ["005_lower", "006_fold_weights", "007_eliminate_dead_code"]
    for name in stages:  # packed weights are digested by content; DCE passes them through
        assert purequant.replay(str(tmp_path / name)).equal, name

"""Activation qparams on zoo models equal torch.ao's observers on the same calibration batches.

Both tools prepare the same model with equivalent qconfigs and see the same batches; every
observer of ours is paired with torch.ao's observer of the same value (fx node names agree) and
their qparams compared: scale relative error <= 1e-6, zero point exact.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import purequant
from purequant.models import ZOO
from purequant.observers import ObserverSpec, qparams
from purequant.qconfig import QConfig

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

KINDS = {"minmax": "MinMaxObserver", "histogram": "HistogramObserver"}


def _configs(kind: str):
    import torch.ao.quantization as tq

    ours = QConfig(
        activation=ObserverSpec(kind),
        weight=ObserverSpec("per_channel_minmax", dtype="qint8", qscheme="per_channel_symmetric"),
    )
    theirs = tq.QConfig(
        activation=getattr(tq, KINDS[kind]).with_args(reduce_range=False),
        weight=tq.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    return ours, tq.QConfigMapping().set_global(theirs)


def _torchao_observers(prepared) -> dict[str, object]:
    """value name -> torch.ao observer module attached to it."""
    out = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module" and "activation_post_process" in node.target:
            out[node.args[0].name] = prepared.get_submodule(node.target)
    return out


@pytest.mark.parametrize("name,kind", [("digits", "minmax"), ("digits", "histogram"), ("resnet18", "minmax"), ("resnet18", "histogram")])
def test_activation_qparams_equal_torchao(name, kind):
    from torch.ao.quantization.quantize_fx import prepare_fx

    entry = ZOO[name]
    model, example = entry.build(), entry.example_inputs()
    batches = [b if isinstance(b, tuple) else (b,) for b in entry.calibration_batches(2, batch=2)]
    ours_qc, theirs_qc = _configs(kind)
    p = purequant.calibrate(purequant.prepare(model, ours_qc, example), batches)
    prepared = prepare_fx(model, theirs_qc, example)
    with torch.no_grad():
        for b in batches:
            prepared(*b)
    theirs = _torchao_observers(prepared)
    compared = 0
    for oid, slot in p.records["insert_observers"].slots.items():
        if slot.is_weight or slot.value_id not in theirs:
            continue
        mine = qparams(slot.spec, p.stats.stats[oid])
        scale, zp = theirs[slot.value_id].calculate_qparams()
        assert abs(mine.scale[0] - float(scale)) <= 1e-6 * float(scale), slot.value_id
        assert mine.zero_point[0] == int(zp), slot.value_id
        compared += 1
    assert compared >= min(len(theirs), len(p.stats.specs)) - 2, f"only {compared} observers paired"

"""Which ops end up quantized, ours against torch.ao's convert_fx, on the same config forms.

The same qconfig dict (1.7 form, holding torch.ao QConfig objects: accepted as given) goes to
both tools; the set of modules that end up running quantized kernels must be the same, and the
outputs close (same calibration batches).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import purequant

torch.set_num_threads(1)
warnings.filterwarnings("ignore")


class Sub(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        x = self.relu(self.conv(x))
        return self.fc(x.mean((2, 3)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.sub = Sub()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.sub(self.conv1(x)))


def _model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Net().eval()


def _data():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, 8, 8, generator=g) for _ in range(4)]


def _qc():
    from torch.ao.quantization import get_default_qconfig

    return get_default_qconfig("x86")


CONFIGS = {
    "global": lambda qc: {"": qc},
    "skip submodule by name": lambda qc: {"": qc, "module_name": [("sub", None)]},
    "skip a type": lambda qc: {"": qc, "object_type": [(nn.Linear, None)]},
    "regex turns a subtree on": lambda qc: {"": None, "module_name_regex": [("sub\\..*", qc)]},
    "name beats type": lambda qc: {"": None, "object_type": [(nn.Linear, qc)], "module_name": [("head", None)]},
}


def _torchao(model, config, data):
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    prepared = prepare_fx(model, QConfigMapping.from_dict(config), (data[0],))
    with torch.no_grad():
        for x in data:
            prepared(x)
    return convert_fx(prepared)


def _theirs_quantized(converted) -> set[str]:
    names = {
        name for name, m in converted.named_modules()
        if name and (type(m).__module__.startswith("torch.ao.nn.quantized") or ".intrinsic.quantized" in type(m).__module__)
    }
    # Outermost quantized modules only (a quantized Linear holds a `_packed_params` child).
    return {n for n in names if not any(n.startswith(o + ".") for o in names)}


def _ours_quantized(module) -> set[str]:
    q = purequant.quantized_record(module)
    graph, lowered = q.prepared.graph, q.records["lower"].lowered
    return {graph.node(m.root).target for m in lowered if graph.node(m.root).op == "call_module"}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_same_modules_quantized_as_torchao(case):
    data, qc = _data(), _qc()
    model = _model()
    config = CONFIGS[case](qc)
    ours = purequant.convert(purequant.calibrate(purequant.prepare(model, config, (data[0],)), data))
    theirs = _torchao(_model(), config, data)
    assert _ours_quantized(ours) == {n for n in _theirs_quantized(theirs)}, case
    with torch.no_grad():
        a, b = ours(data[0]), theirs(data[0])
    sqnr = 20 * torch.log10(b.norm() / (a - b).norm().clamp_min(1e-12))
    assert sqnr > 25, f"{case}: ours vs torch.ao {float(sqnr):.1f} dB"

"""Values that share another value's observer must reach its statistics during calibration.

Regression: a `cat` whose second input has a 10x larger range used to be quantized with the
first input's range only (1.6 dB SQNR); torch.ao's shared observer sees both (36 dB).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

import purequant
from purequant.observers import ObserverSpec
from purequant.qconfig import QConfig

torch.set_num_threads(1)
warnings.filterwarnings("ignore")


class Cat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), 10 * self.b(x)], 1))


def test_cat_inputs_share_statistics_like_torchao():
    import torch.ao.quantization as tq
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, x = Cat().eval(), torch.randn(2, 3, 8, 8)
    qc = QConfig(
        activation=ObserverSpec("minmax"),
        weight=ObserverSpec("per_channel_minmax", dtype="qint8", qscheme="per_channel_symmetric"),
    )
    p = purequant.calibrate(purequant.prepare(model, qc, (x,)), [x])
    shares = p.records["insert_observers"].shares
    assert shares, "the cat's later input shares the first input's observer"
    ours = purequant.convert(p)
    ao_qc = tq.QConfig(
        activation=tq.MinMaxObserver.with_args(reduce_range=False),
        weight=tq.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    prepared = prepare_fx(model, tq.QConfigMapping().set_global(ao_qc), (x,))
    prepared(x)
    theirs = convert_fx(prepared)
    with torch.no_grad():
        y, a, b = model(x), ours(x), theirs(x)
    assert 20 * torch.log10(y.norm() / (y - a).norm()) > 30
    assert torch.equal(a, b)

"""Histogram statistics gathered by `calibrate` on zoo models equal torch.ao's HistogramObserver
fed the same values, bit for bit.

End to end through `calibrate`, where the fast paths all run: the vectorised histc on every
fresh value, the memo on the ReLU6 taps of MobileNetV2 and the reshape/transpose taps of the
BERT-style encoder. Every value an observer sees is recorded on the way (a copy, in order) and
replayed into a torch.ao HistogramObserver of its own; histograms, ranges and qparams must be
equal, not merely close. (Pairing with torch.ao's own prepared model would not do: its folded
conv-bn weights differ from ours by an ulp here and there, so the activations differ.)
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.ao.quantization.observer import HistogramObserver

import purequant
from purequant import calibration
from purequant.models import ZOO
from purequant.observers import qparams
from purequant.observers.histogram import replay_histogram

torch.set_num_threads(1)


@pytest.fixture
def recorded(monkeypatch):
    """observer id -> copies of the values it observed, in order."""
    seen: dict[str, list[torch.Tensor]] = {}
    call = calibration._Collector.__call__

    def recording(self, value, key):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            seen.setdefault(key, []).append(value.detach().clone())
        return call(self, value, key)

    monkeypatch.setattr(calibration._Collector, "__call__", recording)
    return seen


@pytest.fixture
def binned(monkeypatch):
    """How many values the histogram observer actually binned."""
    from purequant.observers import histogram

    calls = []
    real = histogram.histc

    def counting(values, bins, lo, hi):
        calls.append(values.numel())
        return real(values, bins, lo, hi)

    monkeypatch.setattr(histogram, "histc", counting)
    return calls


@pytest.mark.parametrize("name", ["mobilenet_v2", "bert", "resnet18"])
def test_histograms_equal_torchao_on_the_same_values(name, recorded, binned):
    entry = ZOO[name]
    model, example = entry.build().eval(), entry.example_inputs()
    batches = list(entry.calibration_batches(3, batch=2))
    p = purequant.calibrate(purequant.prepare(model, None, example), batches)
    taps = 0
    for oid, spec in p.stats.specs.items():
        if spec.kind != "histogram":
            continue
        ref = HistogramObserver(reduce_range=spec.reduce_range)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for v in recorded[oid]:
                ref(v)
        state = replay_histogram(spec, p.stats.stats[oid])
        assert torch.equal(state.hist, ref.histogram), oid
        assert (state.min_val, state.max_val) == (ref.min_val.item(), ref.max_val.item()), oid
        scale, zero_point = ref.calculate_qparams()
        q = qparams(spec, p.stats.stats[oid])
        assert q.scale == (scale.item(),) and q.zero_point == (zero_point.item(),), oid
        taps += len(recorded[oid]) - len(batches)
    observed = sum(len(v) for v in recorded.values())
    if name != "resnet18":  # the memo read a good share of the values off the last fold
        assert taps > 0 and len(binned) <= observed - taps // 2, (len(binned), observed, taps)

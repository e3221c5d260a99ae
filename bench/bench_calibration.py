"""Calibration cost per batch, as a ratio to the float forward, side by side with torch.ao.

Run: .venv/bin/python bench/bench_calibration.py [--quick] [--models resnet18,bert]

Per model (ResNet-18, MobileNetV2, the BERT-style encoder), default x86 config (histogram
activation observers), one calibration batch of 4 samples, one thread, warm, interleaved:

* float: the plain model forward on the batch (no_grad).
* purequant calibrate: `purequant.calibrate(prepared, [batch])`, continuing from a state that
  already saw the batch (the steady state of a calibration loop, as torch.ao's below). This
  includes emitting the observed GraphModule, which `calibrate` does once per call.
* purequant forward: the observed module's forward alone (emitted once), folding into a running
  dict as `calibrate` does: the per-batch cost of a long calibration loop.
* torch.ao: `prepare_fx(model, get_default_qconfig_mapping("x86"), example)` forward.

Then per observe call on activation-sized tensors: `torch.histc` against our histogram
`observe` and torch.ao's `HistogramObserver` forward (all from a state that saw the tensor).
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import cell, interleaved, machine  # noqa: E402

import purequant  # noqa: E402
from purequant.models import ZOO  # noqa: E402
from purequant.observers import ObserverSpec, init_stats, observe  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

MODELS = ("resnet18", "mobilenet_v2", "bert")
# Activation shapes seen in the zoo at batch 4: MobileNetV2's widest map, ResNet-18's stage-1
# map, its stage-4 map, and a BERT-style hidden state.
SHAPES = ((4, 96, 112, 112), (4, 64, 56, 56), (4, 512, 7, 7), (4, 128, 256))


def torch_ao_prepare(model, example):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    return prepare_fx(model, get_default_qconfig_mapping("x86"), example)


class _Keeper:
    """Observe into a running dict, as `calibrate`'s collector does."""

    __name__ = "purequant_observe"

    def __init__(self, stats):
        self.specs, self.stats = stats.specs, dict(stats.stats)

    def __call__(self, value, key):
        self.stats[key] = observe(self.specs[key], self.stats[key], value.detach())
        return value


def model_row(name, rounds):
    entry = ZOO[name]
    model, example = entry.build().eval(), entry.example_inputs()
    batch = next(iter(entry.calibration_batches(1)))
    batch = batch if isinstance(batch, tuple) else (batch,)
    warm = purequant.calibrate(purequant.prepare(model, None, example), [batch])
    keeper = _Keeper(warm.stats)
    ours_gm = warm.observed_module(keeper)
    theirs = torch_ao_prepare(model, example)
    with torch.no_grad():
        t = interleaved(
            {
                "float": lambda: model(*batch),
                "calibrate": lambda: purequant.calibrate(warm, [batch]),
                "forward": lambda: ours_gm(*batch),
                "torch.ao": lambda: theirs(*batch),
            },
            rounds=rounds,
            warmup=2,
        )
    f = t["float"]["median"]

    def ratio(k):
        return f"{t[k]['median'] / f:.2f}x ({t[k]['min'] / f:.2f}-{t[k]['max'] / f:.2f})"

    return f"| {name} | {cell(t['float'])} | {ratio('calibrate')} | {ratio('forward')} | {ratio('torch.ao')} |"


def observe_row(shape, rounds):
    from torch.ao.quantization.observer import HistogramObserver

    x = torch.randn(*shape).relu_() if len(shape) == 4 else torch.randn(*shape)
    lo, hi = torch.aminmax(x)
    lo, hi = lo.item(), hi.item()
    spec = ObserverSpec("histogram", reduce_range=True)
    stats = observe(spec, init_stats(spec), x)
    ao = HistogramObserver(reduce_range=True)
    ao(x)
    t = interleaved(
        {
            "histc": lambda: torch.histc(x, 2048, min=lo, max=hi),
            "observe": lambda: observe(spec, stats, x),
            "torch.ao": lambda: ao(x),
        },
        rounds=rounds,
        warmup=2,
    )
    n = x.numel()

    def per(k):
        return f"{cell(t[k])}, {t[k]['median'] * 1e9 / n:.1f} ns/elt"

    return f"| {'x'.join(map(str, shape))} | {per('histc')} | {per('observe')} | {per('torch.ao')} |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo names")
    args = ap.parse_args()
    rounds = 5 if args.quick else 11
    print(f"Machine: {machine()}\n")
    print("### calibration per batch (4 samples), as a ratio to the float forward; median (min-max)\n")
    print("| model | float forward | purequant calibrate | purequant observed forward | torch.ao |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        print(model_row(name, rounds), flush=True)
    print("\n### histogram observe per call, 2048 bins; median (min-max)\n")
    print("| activation | torch.histc | purequant observe | torch.ao HistogramObserver |")
    print("|---|---|---|---|")
    for shape in SHAPES:
        print(observe_row(shape, rounds), flush=True)


if __name__ == "__main__":
    main()

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

Then per observe call on activation-sized tensors: `torch.histc`, our exact replacement
(`purequant.observers.histc.histc`, when present), our histogram `observe` (memo dropped first,
so the batch is binned) and torch.ao's `HistogramObserver` forward (all from a state that saw
the tensor).

Every call is timed twice: wall clock (perf_counter, the house figure) and the thread's CPU time
(thread_time), which does not count time the shared machine gives to other processes; both
tables are ratios of medians from the same interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import machine  # noqa: E402

import purequant  # noqa: E402
from purequant.models import ZOO  # noqa: E402
from purequant.observers import ObserverSpec, init_stats, observe  # noqa: E402

try:  # absent before the exact histc: the same script then measures the old code
    from purequant.observers.histc import histc as exact_histc
    from purequant.observers.lastfold import forget
except ImportError:
    exact_histc = None

    def forget():
        return None

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

MODELS = ("resnet18", "mobilenet_v2", "bert")
# Activation shapes seen in the zoo at batch 4: MobileNetV2's widest map, ResNet-18's stage-1
# map, its stage-4 map, and a BERT-style hidden state.
SHAPES = ((4, 96, 112, 112), (4, 64, 56, 56), (4, 512, 7, 7), (4, 128, 256))


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def timed(fns, rounds, warmup=2):
    """{clock: {name: {median, min, max}}}: each callable run `rounds` times, interleaved."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples = {c: {k: [] for k in fns} for c in CLOCKS}
    for _ in range(rounds):
        for k, fn in fns.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            samples["wall"][k].append(time.perf_counter() - w0)
            samples["cpu"][k].append(time.thread_time() - c0)
    return {c: {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in per.items()}
            for c, per in samples.items()}


def ms(m):
    return f"{m['median'] * 1e3:.1f} ms ({m['min'] * 1e3:.1f}-{m['max'] * 1e3:.1f})"


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


def model_rows(name, rounds):
    """{clock: table row} for one zoo model."""
    entry = ZOO[name]
    model, example = entry.build().eval(), entry.example_inputs()
    batch = next(iter(entry.calibration_batches(1)))
    batch = batch if isinstance(batch, tuple) else (batch,)
    warm = purequant.calibrate(purequant.prepare(model, None, example), [batch])
    ours_gm = warm.observed_module(_Keeper(warm.stats))
    theirs = torch_ao_prepare(model, example)
    with torch.no_grad():
        t = timed(
            {
                "float": lambda: model(*batch),
                "calibrate": lambda: purequant.calibrate(warm, [batch]),
                "forward": lambda: ours_gm(*batch),
                "torch.ao": lambda: theirs(*batch),
            },
            rounds,
        )
    rows = {}
    for clock, c in t.items():
        f = c["float"]["median"]

        def ratio(k, c=c, f=f):
            return f"{c[k]['median'] / f:.2f}x ({c[k]['min'] / f:.2f}-{c[k]['max'] / f:.2f})"

        rows[clock] = (f"| {name} | {ms(c['float'])} | {ratio('calibrate')} | {ratio('forward')} | "
                       f"{ratio('torch.ao')} |")
    return rows


def observe_rows(shape, rounds):
    """{clock: table row} for one activation shape."""
    from torch.ao.quantization.observer import HistogramObserver

    x = torch.randn(*shape).relu_() if len(shape) == 4 else torch.randn(*shape)
    lo, hi = torch.aminmax(x)
    lo, hi = lo.item(), hi.item()
    spec = ObserverSpec("histogram", reduce_range=True)
    stats = observe(spec, init_stats(spec), x)
    ao = HistogramObserver(reduce_range=True)
    ao(x)
    fns = {"torch.histc": lambda: torch.histc(x, 2048, min=lo, max=hi)}
    if exact_histc is not None:
        fns["exact histc"] = lambda: exact_histc(x, 2048, lo, hi)
    fns["observe"] = lambda: (forget(), observe(spec, stats, x))
    fns["torch.ao"] = lambda: ao(x)
    t = timed(fns, rounds)
    n = x.numel()
    rows = {}
    for clock, c in t.items():
        cells = [f"{c[k]['median'] * 1e3:.2f} ms, {c[k]['median'] * 1e9 / n:.1f} ns/elt"
                 if k in c else "n/a" for k in ("torch.histc", "exact histc", "observe", "torch.ao")]
        rows[clock] = f"| {'x'.join(map(str, shape))} | " + " | ".join(cells) + " |"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo names")
    args = ap.parse_args()
    rounds = 5 if args.quick else 11
    print(f"Machine: {machine()}\n")
    rows = [model_rows(name, rounds) for name in args.models.split(",")]
    for clock in CLOCKS:
        print(f"### calibration per batch (4 samples) / float forward, {clock} clock; median (min-max)\n")
        print("| model | float forward | purequant calibrate | purequant observed forward | torch.ao |")
        print("|---|---|---|---|---|")
        print("\n".join(r[clock] for r in rows) + "\n")
    rows = [observe_rows(shape, rounds) for shape in SHAPES]
    for clock in CLOCKS:
        print(f"### histogram per call, 2048 bins, {clock} clock; median\n")
        print("| activation | torch.histc | purequant histc | purequant observe | torch.ao HistogramObserver |")
        print("|---|---|---|---|---|")
        print("\n".join(r[clock] for r in rows) + "\n")


if __name__ == "__main__":
    main()

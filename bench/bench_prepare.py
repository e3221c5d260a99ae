"""prepare (without calibration) and calibration overhead, side by side with torch.ao.

Run: .venv/bin/python bench/bench_prepare.py [--quick]

For ResNet-18, MobileNetV2 and the BERT-style encoder: our `prepare` against torch.ao's
`prepare_fx`, both with the default x86 config and the same example inputs (warm calls,
interleaved); the tracing share of each (torch.fx's symbolic_trace alone) is shown too, since
both tools pay it. Then calibration per batch as a ratio to the plain float forward on the
same batch, for both tools. Then prepare on synthetic chains (1k to 30k nodes) with the
log-log slope; torch.ao is run only where it finishes in reasonable time.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import cell, fmt_s, interleaved, machine  # noqa: E402

import purequant  # noqa: E402
from purequant.models import ZOO, residual_chain_for_nodes  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)


def torch_ao_prepare(model, example):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    return prepare_fx(model, get_default_qconfig_mapping("x86"), example)


def prepare_rows(names, rounds):
    rows = []
    for name in names:
        entry = ZOO[name]
        model, example = entry.build(), entry.example_inputs()
        t = interleaved(
            {
                "purequant": lambda m=model, x=example: purequant.prepare(m, None, x),
                "torch.ao": lambda m=model, x=example: torch_ao_prepare(m, x),
                "symbolic_trace": lambda m=model: torch.fx.symbolic_trace(m),
            },
            rounds=rounds,
        )
        ratio = t["torch.ao"]["median"] / t["purequant"]["median"]
        rows.append(f"| {name} | {cell(t['purequant'])} | {cell(t['torch.ao'])} | {fmt_s(t['symbolic_trace']['median'])} | {ratio:.1f}x |")
    return rows


def calibration_rows(names, rounds):
    rows = []
    for name in names:
        entry = ZOO[name]
        model, example = entry.build(), entry.example_inputs()
        batch = next(iter(entry.calibration_batches(1)))
        batch = batch if isinstance(batch, tuple) else (batch,)
        ours = purequant.prepare(model, None, example)
        ours_gm = ours.observed_module(_Keeper(ours))
        theirs = torch_ao_prepare(model, example)
        with torch.no_grad():
            t = interleaved(
                {
                    "float": lambda m=model, b=batch: m(*b),
                    "purequant": lambda m=ours_gm, b=batch: m(*b),
                    "torch.ao": lambda m=theirs, b=batch: m(*b),
                },
                rounds=rounds,
            )
        f = t["float"]["median"]
        rows.append(
            f"| {name} | {fmt_s(f)} | {t['purequant']['median'] / f:.2f}x | {t['torch.ao']['median'] / f:.2f}x |"
        )
    return rows


class _Keeper:
    """Observe into a running dict, as `calibrate` does, for a module we can time per batch."""

    def __init__(self, prepared):
        from purequant.observers import observe

        self.observe, self.specs, self.stats = observe, prepared.stats.specs, dict(prepared.stats.stats)
        self.__name__ = "purequant_observe"

    def __call__(self, value, key):
        self.stats[key] = self.observe(self.specs[key], self.stats[key], value.detach())
        return value


def chain_rows(sizes, ao_limit, rounds):
    rows, points = [], []
    for n in sizes:
        model = residual_chain_for_nodes(n, "conv")
        example = _chain_input(model)
        fns = {"purequant": lambda m=model, x=example: purequant.prepare(m, None, x)}
        if n <= ao_limit:
            fns["torch.ao"] = lambda m=model, x=example: torch_ao_prepare(m, x)
        t = interleaved(fns, rounds=rounds if n <= 3000 else 1, warmup=1 if n <= 10000 else 0)
        points.append((n, t["purequant"]["median"]))
        ao = t.get("torch.ao")
        ratio = f"{ao['median'] / t['purequant']['median']:.1f}x" if ao else "not run"
        rows.append(f"| {n:,} | {cell(t['purequant'])} | {cell(ao) if ao else 'not run'} | {ratio} |")
    (n0, t0), (n1, t1) = points[0], points[-1]
    slope = math.log(t1 / t0) / math.log(n1 / n0)
    return rows, slope


def _chain_input(model):
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return (torch.randn(1, first.in_channels, 8, 8),)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds, chains up to 3k nodes")
    args = ap.parse_args()
    rounds = 3 if args.quick else 7
    print(f"Machine: {machine()}\n")
    print("### prepare (no calibration), warm, default x86 config\n")
    print("| model | purequant | torch.ao prepare_fx | torch.fx symbolic_trace alone | speed-up |")
    print("|---|---|---|---|---|")
    print("\n".join(prepare_rows(["resnet18", "mobilenet_v2", "bert"], rounds)))
    print("\n### calibration cost per batch, as a ratio to the float forward on that batch\n")
    print("| model | float forward | purequant | torch.ao |")
    print("|---|---|---|---|")
    print("\n".join(calibration_rows(["resnet18", "mobilenet_v2", "bert"], rounds)))
    sizes = (1000, 3000) if args.quick else (1000, 3000, 10000, 30000)
    rows, slope = chain_rows(sizes, ao_limit=1000, rounds=rounds)
    print("\n### prepare on synthetic conv chains\n")
    print("| nodes | purequant | torch.ao prepare_fx | speed-up |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nlog-log slope of purequant prepare, {sizes[0]:,} to {sizes[-1]:,} nodes: {slope:.2f}")


if __name__ == "__main__":
    main()

"""Latency of float, ours and torch.ao quantized models, and a profile where ours is slower.

Worker (one fresh process per thread count, so OMP_PROC_BIND/OMP_PLACES, set by the parent
before torch starts, take effect):

    OMP_PROC_BIND=close OMP_PLACES=cores .venv/bin/python bench/bench_latency.py \
        --threads 2 --models resnet18,bert --batches 1,8

prints one JSON line. Per model: float, ours (`purequant.convert`, or `quantize_dynamic` for
the dynamic models), torch.ao (`convert_fx`; for dynamic models also eager `quantize_dynamic`),
all with the same mapping and calibration batches (bench_recipes), run interleaved under
`torch.no_grad()` after warm-up. Where ours is more than 5% slower than torch.ao, both are
profiled with torch.profiler: time per op and calls per forward, and the time outside ops
(the fx module's Python), each the minimum over 3 interleaved windows of 10 forwards.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import bench_recipes as R  # noqa: E402
from bench_timing import emit_json, interleave  # noqa: E402

from purequant.models import ZOO  # noqa: E402

SLOWER = 1.05  # ours / torch.ao above this gets a profile


def models_for(c: R.Case) -> dict[str, torch.nn.Module]:
    out = {"float": c.model, "ours": R.ours_quantized(c), "torch.ao": R.ao_quantized(c)}
    if c.dynamic:
        out["torch.ao eager"] = R.ao_eager_dynamic(c)
    return out


def _rounds(fns: dict, budget_s: float) -> int:
    t0 = time.perf_counter()
    for fn in fns.values():
        fn()
    per_round = max(time.perf_counter() - t0, 1e-6)
    return max(7, min(200, int(budget_s / per_round)))


@torch.no_grad()
def time_models(models: dict[str, torch.nn.Module], x: tuple, budget_s: float) -> dict:
    fns = {k: (lambda m=m: m(*x)) for k, m in models.items()}
    for _ in range(3):  # warm-up: first calls prepack, allocate, pick kernels
        for fn in fns.values():
            fn()
    return interleave(fns, rounds=_rounds(fns, budget_s), warmup=0, collect=False)


def profiles(models: dict[str, torch.nn.Module], x: tuple, reps: int = 3) -> dict:
    """`op_profile` of each model, `reps` windows interleaved; per op the minimum over windows
    (a window that other jobs slowed does not count)."""
    runs: dict[str, list[dict]] = {k: [] for k in models}
    for _ in range(reps):
        for k, m in models.items():
            runs[k].append(op_profile(m, x))
    out = {}
    for k, rs in runs.items():
        ops = {op: min((r["ops"][op] for r in rs if op in r["ops"]), key=lambda v: v["ms"])
               for r in rs for op in r["ops"]}
        out[k] = {"wall_ms": min(r["wall_ms"] for r in rs), "ops": ops,
                  "outside_ops_ms": min(r["outside_ops_ms"] for r in rs)}
    return out


@torch.no_grad()
def op_profile(model: torch.nn.Module, x: tuple, calls: int = 10) -> dict:
    """Per-op self CPU ms and calls per forward, and ms per forward outside any op."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        model(*x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            model(*x)
        wall = (time.perf_counter() - t0) / calls
    ops = {e.key: {"ms": e.self_cpu_time_total / 1e3 / calls, "calls": e.count / calls}
           for e in prof.key_averages()}
    in_ops = sum(v["ms"] for v in ops.values())
    return {"wall_ms": wall * 1e3, "outside_ops_ms": max(0.0, wall * 1e3 - in_ops), "ops": ops}


def latency(names: list[str], batches: list[int], budget_s: float) -> dict:
    results, notes = [], []
    for name in names:
        c = R.usable_case(name)
        notes += c.notes
        try:
            models = models_for(c)
        except Exception as ex:
            results.append({"label": c.label, "error": R.first_line(ex)})
            continue
        for b in batches:
            x = ZOO[name].example_inputs(b)
            t = time_models(models, x, budget_s)
            row = {"label": c.label, "batch": b, "times": {k: s.as_dict() for k, s in t.items()}}
            if t["ours"].median > SLOWER * t["torch.ao"].median:
                row["profile"] = profiles({k: models[k] for k in ("ours", "torch.ao")}, x)
            results.append(row)
    return {"threads": torch.get_num_threads(), "rows": results, "notes": notes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--budget", type=float, default=4.0, help="seconds of timed runs per row")
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    emit_json(latency(opts.models.split(","), [int(b) for b in opts.batches.split(",")], opts.budget))


if __name__ == "__main__":
    main()

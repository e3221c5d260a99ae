"""Transform time (prepare and convert, without calibration) and its scaling, against torch.ao.

Functions return plain data (Stats and notes); `run_all.py` renders them. Also runnable as a
worker that times the first prepare and convert in a fresh process:

    .venv/bin/python bench/bench_transform.py --first-call ours|torch.ao MODEL

Warm timings interleave ours, torch.ao and `torch.fx.symbolic_trace` in one process after a
warm-up round, with `gc.collect()` before every call. Convert is timed on a calibrated value:
ours is pure, so the same `Prepared` is converted every round; torch.ao's `convert_fx` consumes
its input, so it gets a fresh `copy.deepcopy` of one calibrated model per call (untimed).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import bench_recipes as R  # noqa: E402
from bench_timing import Stat, emit_json, interleave, slope, timed  # noqa: E402

import purequant  # noqa: E402


def transform_times(name: str, rounds: int, warmup: int = 1) -> dict:
    """Warm prepare and convert of both tools and symbolic_trace alone, on one model."""
    c = R.usable_case(name)
    ours_cal = R.ours_calibrated(c)
    ao_cal = R.ao_calibrated(c)
    prep = interleave(
        {
            "ours": lambda: R.ours_prepare(c),
            "torch.ao": lambda: R.ao_prepare(c),
            "symbolic_trace": lambda: torch.fx.symbolic_trace(c.model),
        },
        rounds=rounds,
        warmup=warmup,
    )
    conv = interleave(
        {"ours": lambda: purequant.convert(ours_cal), "torch.ao": R.ao_convert},
        rounds=rounds,
        warmup=warmup,
        setup={"torch.ao": lambda: copy.deepcopy(ao_cal)},
    )
    return {"label": c.label, "nodes": c.nodes, "fallback": c.fallback, "prepare": prep,
            "convert": conv, "notes": c.notes}


# ------------------------------------------------------------------------------ first call
def first_call(tool: str, name: str, fallback: bool) -> dict:
    """Seconds of the first prepare and first convert in this (fresh) process.

    `fallback`: use the model's fallback mapping (the parent found that ours needs it; it is
    not probed here, since probing would make these calls not the first).
    """
    torch.set_num_threads(1)
    c = R.with_fallback(R.case(name)) if fallback else R.case(name)
    if tool == "ours":
        w_p, _, prepared = timed(lambda: R.ours_prepare(c))
        if not c.dynamic:
            prepared = purequant.calibrate(prepared, c.calibration)
        w_c, _, _ = timed(lambda: purequant.convert(prepared))
    else:
        w_p, _, prepared = timed(lambda: R.ao_prepare(c))
        if not c.dynamic:
            with torch.no_grad():
                for b in c.calibration:
                    prepared(*b)
        w_c, _, _ = timed(lambda: R.ao_convert(prepared))
    return {"label": c.label, "prepare": w_p, "convert": w_c}


# --------------------------------------------------------------------------------- scaling
def scaling(sizes: tuple[int, ...], rounds: tuple[int, ...], ao_sizes: tuple[int, ...]) -> dict:
    """Our prepare, convert and both on conv chains; torch.ao where asked (it may fail)."""
    rows = []
    for n, r in zip(sizes, rounds):
        c = R.case(f"chain:{n}")
        cal = R.ours_calibrated(c)
        warm = 1 if n <= 3000 else 0
        t = interleave({"prepare": lambda c=c: R.ours_prepare(c),
                        "convert": lambda p=cal: purequant.convert(p)}, rounds=r, warmup=warm)
        row = {"nodes": c.nodes, "prepare": t["prepare"], "convert": t["convert"], "ao": None}
        if n in ao_sizes:
            row["ao"] = _ao_once(c)
        rows.append(row)
    ns = [row["nodes"] for row in rows]
    fits = {}
    if len(rows) >= 2:
        for key in ("prepare", "convert"):
            fits[key] = slope(ns, [row[key].median for row in rows])
            fits[key + " cpu"] = slope(ns, [row[key].cpu for row in rows])
        fits["total"] = slope(ns, [row["prepare"].median + row["convert"].median for row in rows])
        fits["total cpu"] = slope(ns, [row["prepare"].cpu + row["convert"].cpu for row in rows])
    return {"rows": rows, "slopes": fits}


def _ao_once(c: R.Case) -> dict:
    """torch.ao prepare_fx + calibrate + convert_fx once, at the default recursion limit."""
    t0 = time.perf_counter()
    try:
        w_p, c_p, prepared = timed(lambda: R.ao_prepare(c))
        with torch.no_grad():
            prepared(*c.example)
        w_c, c_c, _ = timed(lambda: R.ao_convert(prepared))
    except RecursionError as ex:
        return {"error": f"RecursionError after {time.perf_counter() - t0:.1f} s "
                         f"(recursion limit {sys.getrecursionlimit()}): {str(ex)[:80]}"}
    return {"prepare": Stat.of([w_p], [c_p]), "convert": Stat.of([w_c], [c_c])}


def trace_scaling(sizes: tuple[int, ...], rounds: tuple[int, ...]) -> dict:
    """bench_trace.py's measurement: symbolic_trace vs our fx -> IR -> fx and trace+emit."""
    import bench_trace

    rows = []
    for n, r in zip(sizes, rounds):
        raw = bench_trace.measure(n, r)
        row = {"nodes": raw.pop("nodes")[0]}
        for key, samples in raw.items():
            row[key] = Stat.of([w for w, _ in samples], [c for _, c in samples])
        rows.append(row)
    ns = [row["nodes"] for row in rows]
    fits = {}
    if len(rows) >= 2:
        for key in ("symbolic_trace", "ours fx->IR->fx", "ours trace+emit"):
            fits[key] = slope(ns, [row[key].cpu for row in rows])
    return {"rows": rows, "slopes": fits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first-call", nargs=2, metavar=("TOOL", "MODEL"), required=True)
    ap.add_argument("--fallback", action="store_true", help="use the model's fallback mapping")
    opts = ap.parse_args()
    tool, name = opts.first_call
    emit_json(first_call(tool, name, opts.fallback))


if __name__ == "__main__":
    main()

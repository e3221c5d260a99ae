"""Trace and emit scaling: torch.fx's symbolic_trace beside our fx -> IR -> GraphModule.

On residual chains of ~1k, 10k and 30k fx nodes (`purequant.models.residual_chain_for_nodes`),
times, interleaved in one process after a warm-up round:

  (a) `torch.fx.symbolic_trace(model)`: fx tracing plus its GraphModule;
  (b) ours, fx -> IR -> fx: `from_fx` (the traced fx Graph to a Traced: IR graph, specs, params
      table) plus `to_graph_module` (IR -> GraphModule), on a graph our tracer captured once;
  (c) for reference, our tracer alone (`capture`: fx tracing with provenance, no side effects)
      and the whole `purequant.trace` + `to_graph_module`.

Prints medians with [min, max], the ratios (b)/(a) and (c)/(a), and the log-log slope of (b)
between the smallest and largest size (and fitted over all sizes), twice: by wall clock, and by
this process's CPU time (the stable figure when other jobs share the 2 vCPUs).

Run: .venv/bin/python bench/bench_trace.py [--sizes 1000,10000,30000] [--rounds 7,5,3]
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch

import purequant
from purequant.models import residual_chain_for_nodes
from purequant.trace import from_fx, to_graph_module
from purequant.trace.capture import capture

SIZES = (1_000, 10_000, 30_000)
ROUNDS = (9, 5, 3)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    gc.collect()  # start every call from the same heap state
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def measure(n_nodes: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """(wall, cpu) seconds per variant: `rounds` interleaved calls each after a warm-up round."""
    model = residual_chain_for_nodes(n_nodes)
    fx_graph, tracer = capture(model, (), frozenset(), None)
    variants: dict[str, Callable[[], object]] = {
        "symbolic_trace": lambda: torch.fx.symbolic_trace(model),
        "ours fx->IR->fx": lambda: to_graph_module(
            from_fx(model, fx_graph, tracer.provenance, tracer.constants)),
        "ours capture": lambda: capture(model, (), frozenset(), None),
        "ours trace+emit": lambda: to_graph_module(purequant.trace(model)),
    }
    times: dict[str, list] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up: imports, caches, first compile
        fn()
    for _ in range(rounds):
        for k, fn in variants.items():
            times[k].append(_timed(fn))
    times["nodes"] = [len(fx_graph.nodes)]
    return times


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:,.0f} ms [{min(xs) * 1e3:,.0f}, {max(xs) * 1e3:,.0f}]"


def _slope(ns: list[int], ts: list[float]) -> float:
    xs, ys = [math.log(n) for n in ns], [math.log(t) for t in ts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--rounds", default=",".join(map(str, ROUNDS)))
    opts = ap.parse_args()
    sizes = [int(s) for s in opts.sizes.split(",")]
    rounds = [int(r) for r in opts.rounds.split(",")]
    torch.set_num_threads(1)
    print(f"machine: {_cpu()}; torch {torch.__version__}; 1 thread")
    results = {n: measure(n, r) for n, r in zip(sizes, rounds)}
    for clock, idx in (("wall clock (perf_counter)", 0), ("CPU time of this process "
                                                            "(process_time)", 1)):
        _report(clock, sizes, {n: {k: [x[idx] for x in v] if k != "nodes" else v
                                   for k, v in t.items()} for n, t in results.items()})


def _report(clock: str, sizes: list[int], results: dict) -> None:
    med = statistics.median
    print(f"\n### {clock}: median [min, max]\n")
    print("| fx nodes | symbolic_trace | ours fx->IR->fx | ratio | ours capture | "
          "ours trace+emit | ratio |")
    print("|---|---|---|---|---|---|---|")
    for t in results.values():
        base = med(t["symbolic_trace"])
        print(f"| {t['nodes'][0]:,} | {_fmt(t['symbolic_trace'])} | {_fmt(t['ours fx->IR->fx'])} | "
              f"{med(t['ours fx->IR->fx']) / base:.2f} | {_fmt(t['ours capture'])} | "
              f"{_fmt(t['ours trace+emit'])} | {med(t['ours trace+emit']) / base:.2f} |")
    ns = [results[n]["nodes"][0] for n in sizes]
    print()
    for key in ("ours fx->IR->fx", "symbolic_trace", "ours trace+emit"):
        ts = [med(results[n][key]) for n in sizes]
        ends = math.log(ts[-1] / ts[0]) / math.log(ns[-1] / ns[0])
        print(f"- log-log slope, {key}: {ends:.3f} ({ns[0]:,} -> {ns[-1]:,} nodes); "
              f"fitted over all sizes {_slope(ns, ts):.3f}")


if __name__ == "__main__":
    main()

"""What every section of `run_all.py` shares: the run's options, the section header line,
worker dispatch (a fresh process, or this one for the smoke test), and small formatting helpers.
"""

from __future__ import annotations

import datetime
import math
import os
import statistics
from dataclasses import dataclass

import bench_recipes as R
import bench_timing
import torch
from bench_timing import run_worker

ZOO_MODELS = ("resnet18", "mobilenet_v2", "bert", "lstm", "mlp", "digits")
LATENCY_MODELS = ("resnet18", "mobilenet_v2", "bert", "lstm", "mlp")
PIN = {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}
TARGET_SLOPE, TARGET_LATENCY = 1.15, 1.05


@dataclass
class Options:
    """One run's choices, from `run_all.options` (command line); read by every section."""

    quick: bool
    models: tuple[str, ...] | None  # overrides every section's model list
    rounds: int
    chain_sizes: tuple[int, ...]
    chain_rounds: tuple[int, ...]
    ao_chain_sizes: tuple[int, ...]
    trace_sizes: tuple[int, ...]
    trace_rounds: tuple[int, ...]
    threads: tuple[int, ...]
    batches: tuple[int, ...]
    budget: float
    in_process: bool
    command: str

    def pick(self, default: tuple[str, ...]) -> list[str]:
        return list(self.models or default)


def meta(opts: Options) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    kind = "quick run (fewer rounds and sizes: not for quoting)" if opts.quick else "full run"
    return f"_Measured {now} by `{opts.command}` ({kind}), {bench_timing.source_state()}; load average {load}._"


def geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else float("nan")


def worker(opts: Options, script: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    """A worker's JSON, from a fresh process (or this one with --in-process)."""
    if not opts.in_process:
        return run_worker(script, args, env=env)
    import bench_latency
    import bench_numerics
    import bench_transform

    try:
        if script == "bench_transform.py":
            return bench_transform.first_call(args[1], args[2], "--fallback" in args)
        if script == "bench_numerics.py":
            return bench_numerics.memory(args[1], args[2], "--fallback" in args, traced=False)
        kw = dict(zip(args[::2], args[1::2]))
        torch.set_num_threads(int(kw["--threads"]))
        return bench_latency.latency(kw["--models"].split(","),
                                     [int(b) for b in kw["--batches"].split(",")], float(kw["--budget"]))
    except Exception as ex:
        return {"error": R.first_line(ex)}


FALLBACK_CACHE: dict[str, bool] = {}


def needs_fallback(name: str) -> bool:
    """Whether our convert fails on `name` with the shared mapping (so both use its fallback)."""
    if name not in FALLBACK_CACHE:
        FALLBACK_CACHE[name] = R.usable_case(name).fallback
    return FALLBACK_CACHE[name]


def notes_block(notes: list[str]) -> str:
    seen = list(dict.fromkeys(notes))
    return "\n".join(f"- {n}" for n in seen)

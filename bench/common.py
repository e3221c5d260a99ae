"""Shared measuring helpers: interleaved side-by-side timing, medians and ratios.

Method (shared/BENCHMARKING.md): warm up, then alternate A, B, A, B ... in one process and
report medians with min and max; ratios are ratios of medians from the same run.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def interleaved(fns: dict[str, Callable[[], object]], *, rounds: int = 7, warmup: int = 1) -> dict[str, dict[str, float]]:
    """Time each callable `rounds` times, interleaved; return {name: {median, min, max}} in seconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in samples.items()}


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} vCPUs, Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def cell(m: dict[str, float]) -> str:
    return f"{fmt_s(m['median'])} ({fmt_s(m['min'])}-{fmt_s(m['max'])})"

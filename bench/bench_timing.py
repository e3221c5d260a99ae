"""Timing, formatting and subprocess helpers shared by `run_all.py` and its section modules.

Method (shared/BENCHMARKING.md): warm up, then alternate A, B, A, B ... in one process; keep
every sample's wall-clock and CPU time; quote medians with min and max, and ratios of medians
from the same run. CPU time (`time.process_time`) is kept beside wall clock because the 2 vCPUs
are shared: when other jobs run, wall clock spreads 2-5x while this process's CPU time stays
within a few percent (at one thread; with two threads it sums both).
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
COLLECT = True  # gc.collect() before each timed call (~80 ms each with torch loaded); quick runs skip it


@dataclass(frozen=True)
class Stat:
    """Median, min and max of the wall-clock samples (seconds), and the median CPU time."""

    median: float
    lo: float
    hi: float
    cpu: float
    n: int

    @classmethod
    def of(cls, wall: list[float], cpu: list[float]) -> Stat:
        return cls(statistics.median(wall), min(wall), max(wall), statistics.median(cpu), len(wall))

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "lo": self.lo, "hi": self.hi, "cpu": self.cpu, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict) -> Stat:
        return cls(d["median"], d["lo"], d["hi"], d["cpu"], int(d["n"]))


def timed(fn: Callable[[], object], *, collect: bool = True) -> tuple[float, float, object]:
    """(wall, cpu, result) of one call; `gc.collect()` first so every call starts alike."""
    if collect and COLLECT:
        gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def interleave(
    fns: dict[str, Callable[..., object]],
    *,
    rounds: int,
    warmup: int = 1,
    setup: dict[str, Callable[[], object]] | None = None,
    collect: bool = True,
) -> dict[str, Stat]:
    """Time each callable `rounds` times, interleaved, after `warmup` untimed rounds.

    Round i starts at the i-th callable (A B C, B C A, C A B, ...), so none always runs right
    after the same neighbour (a float model that has just flushed the caches, say).
    `setup[name]`, when given, is called untimed before each call of `fns[name]` and its result
    passed as the one argument (for torch.ao's `convert_fx`, which consumes its input).
    """
    setup = setup or {}

    def call(name: str) -> tuple[float, float, object]:
        arg = (setup[name](),) if name in setup else ()
        return timed(lambda: fns[name](*arg), collect=collect)

    for _ in range(warmup):
        for name in fns:
            call(name)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            w, c, _ = call(name)
            wall[name].append(w)
            cpu[name].append(c)
    return {k: Stat.of(wall[k], cpu[k]) for k in fns}


def slope(ns: list[int], ts: list[float]) -> float:
    """Least-squares slope of log(t) against log(n)."""
    xs, ys = [math.log(n) for n in ns], [math.log(t) for t in ts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


# ------------------------------------------------------------------------------ formatting
def fmt_s(seconds: float) -> str:
    """A duration with a unit chosen for it: 0.42 ms, 12.3 ms, 1.23 s."""
    if seconds < 0.01:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def cell(s: Stat | None) -> str:
    """`median (min-max)` or a dash."""
    if s is None:
        return "-"
    return f"{fmt_s(s.median)} ({fmt_s(s.lo)}-{fmt_s(s.hi)})"


def ratio(a: Stat | None, b: Stat | None, *, cpu: bool = False) -> str:
    """a / b of medians (wall, or CPU with `cpu=True`), or a dash."""
    if a is None or b is None:
        return "-"
    num, den = (a.cpu, b.cpu) if cpu else (a.median, b.median)
    return f"{num / den:.2f}" if den > 0 else "-"


def fmt_bytes(n: float) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n:.0f} B"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def source_state() -> str:
    """The commit of the purequant being measured, and whether its src/ differs from it."""
    import purequant

    src = os.path.dirname(os.path.dirname(os.path.abspath(purequant.__file__)))
    try:
        rev = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", src, "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "purequant from an unknown source state"
    return f"purequant at commit {rev}" + (" with uncommitted changes under src/" if dirty else "")


def machine_lines() -> list[str]:
    """Bullet lines describing the CPU, cores, torch build and thread settings of this process."""
    import torch

    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    omp = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES") if k in os.environ}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return [
        f"CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; int8-relevant flags: {', '.join(isa) or 'none'}",
        f"torch {torch.__version__} (quantized engine {torch.backends.quantized.engine}); "
        f"Python {platform.python_version()}; {source_state()}",
        f"threads: transform, numerics and memory sections run at {torch.get_num_threads()} torch "
        f"thread(s); latency runs one subprocess per thread count with OMP_PROC_BIND=close "
        f"OMP_PLACES=cores set before torch starts; environment of the parent: {omp or 'no OMP_* set'}",
        f"load average (1, 5, 15 min) at the end of the run: {load}",
    ]


# ---------------------------------------------------------------------------- subprocesses
def run_worker(script: str, args: list[str], *, env: dict[str, str] | None = None,
               timeout: float = 3600) -> dict:
    """Run `bench/<script> args` in a fresh interpreter; parse the JSON of its last stdout line.

    A failure comes back as {"error": "..."} rather than raising, so one bad worker does not
    lose the rest of the run.
    """
    full_env = {**os.environ, **(env or {})}
    cmd = [sys.executable, os.path.join(BENCH_DIR, script), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s: {' '.join(args)}"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def emit_json(obj: dict) -> None:
    """A worker's answer: one JSON line on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

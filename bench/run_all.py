"""Measure purequant against torch.ao FX, every section side by side, and rewrite docs/benchmarks.md.

    .venv/bin/python bench/run_all.py                      # full run (~30 min), rewrites the page
    .venv/bin/python bench/run_all.py --only latency,size  # rerun sections, keep the others
    .venv/bin/python bench/run_all.py --quick              # fewer rounds and sizes, to stdout

Sections: transform (prepare and convert, warm and first call), scaling (conv chains to 30k
nodes, trace and emit), calibration (from bench_calibration.py), latency (1 and 2 threads,
one subprocess each), numerics (SQNR), size (bytes and peak memory). The page is made of
marked blocks (bench_doc.py): a run replaces the blocks it measured and keeps the others and
the hand-written ones (the IR cost model and its design note). A `--quick` run prints the page
instead of writing it, unless `--out` is given. `--in-process` runs the subprocess workers in
this process (for the smoke test: first calls, thread pinning and memory are then not real
measurements, and the page says so).

Nothing here is a test: tests/test_bench_smoke.py only checks that the harness runs.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_doc  # noqa: E402
import bench_recipes as R  # noqa: E402
import bench_timing  # noqa: E402
import torch  # noqa: E402
from bench_timing import (  # noqa: E402
    Stat,
    cell,
    fmt_bytes,
    fmt_s,
    machine_lines,
    ratio,
    run_worker,
    table,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
SECTIONS = ("transform", "scaling", "calibration", "latency", "numerics", "size")
ORDER = ["header", "keep-ir", "transform", "scaling", "keep-trace-notes", "calibration",
         "latency", "numerics", "size", "keep-analysis"]
ZOO_MODELS = ("resnet18", "mobilenet_v2", "bert", "lstm", "mlp", "digits")
LATENCY_MODELS = ("resnet18", "mobilenet_v2", "bert", "lstm", "mlp")
PIN = {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}
TARGET_SLOPE, TARGET_LATENCY = 1.15, 1.05


@dataclass
class Options:
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


def options(argv: list[str] | None = None) -> tuple[Options, list[str], str | None]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer rounds, smaller sizes, no gc.collect() between calls; print the page")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {','.join(SECTIONS)}")
    ap.add_argument("--models", help="comma-separated zoo names, replacing every section's list")
    ap.add_argument("--chain-sizes", help="comma-separated chain node counts (scaling, trace)")
    ap.add_argument("--in-process", action="store_true", help="run workers here (smoke test)")
    ap.add_argument("--out", help="where to write the page ('-': stdout); default docs/benchmarks.md, "
                                  "or stdout with --quick")
    a = ap.parse_args(argv)
    only = [s for s in a.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    chains = tuple(int(s) for s in a.chain_sizes.split(",")) if a.chain_sizes else None
    q = a.quick
    cs = chains or ((1000, 3000) if q else (1000, 3000, 10000, 30000))
    ts = chains or ((1000, 3000) if q else (1000, 10000, 30000))
    opts = Options(
        quick=q, models=tuple(a.models.split(",")) if a.models else None, rounds=3 if q else 7,
        chain_sizes=cs, chain_rounds=tuple(_chain_rounds(n, q) for n in cs),
        ao_chain_sizes=tuple(n for n in cs if n <= 3000)[:1 if q else 2],
        trace_sizes=ts, trace_rounds=tuple(_chain_rounds(n, q) for n in ts),
        threads=(torch.get_num_threads(),) if a.in_process else (1, 2), batches=(1,) if q else (1, 8),
        budget=0.3 if a.in_process else 1.0 if q else 4.0, in_process=a.in_process,
        command=".venv/bin/python bench/run_all.py" + "".join(" " + shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:])),
    )
    out = a.out or ("-" if q else DOC)
    return opts, only, out


def _chain_rounds(n: int, quick: bool) -> int:
    if quick or n > 10000:
        return 1
    return 5 if n <= 1000 else 3 if n <= 3000 else 2


# ---------------------------------------------------------------------------------- helpers
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



# ------------------------------------------------------------------------------- transform
def section_transform(opts: Options) -> str:
    import bench_transform as T

    names = opts.pick(ZOO_MODELS) + ([] if opts.models else ["chain:1000"])
    results, notes = [], []
    for name in names:
        chain = name.startswith("chain:")  # ~40 s a round for torch.ao: fewer rounds, no warm-up
        try:
            r = T.transform_times(name, max(1, opts.rounds // 3) if chain else opts.rounds,
                                  warmup=0 if chain else 1)
        except Exception as ex:
            notes.append(f"{name}: {R.first_line(ex)}")
            continue
        FALLBACK_CACHE[name] = r["fallback"]
        results.append(r)
        notes += r["notes"]
        print(f"  transform {r['label']}: done", file=sys.stderr, flush=True)
    prep_rows, conv_rows, ratios = [], [], {"prepare": [], "convert": [], "total": []}
    for r in results:
        p, c = r["prepare"], r["convert"]
        tr = p["symbolic_trace"]
        prep_rows.append([r["label"], f"{r['nodes']:,}", cell(p["ours"]), cell(p["torch.ao"]),
                          ratio(p["ours"], p["torch.ao"]), ratio(p["ours"], p["torch.ao"], cpu=True),
                          fmt_s(tr.median),
                          f"{tr.median / p['ours'].median:.0%} / {tr.median / p['torch.ao'].median:.0%}"])
        total = (p["ours"].median + c["ours"].median) / (p["torch.ao"].median + c["torch.ao"].median)
        conv_rows.append([r["label"], cell(c["ours"]), cell(c["torch.ao"]), ratio(c["ours"], c["torch.ao"]),
                          ratio(c["ours"], c["torch.ao"], cpu=True), f"{total:.2f}"])
        ratios["prepare"].append(p["ours"].median / p["torch.ao"].median)
        ratios["convert"].append(c["ours"].median / c["torch.ao"].median)
        ratios["total"].append(total)
    first = first_calls(opts, [r for r in results if not r["label"].startswith("conv chain")])
    head = ("**Headline (transform):** ours / torch.ao, geometric mean over the section's models: prepare "
            f"{geomean(ratios['prepare']):.2f}, convert {geomean(ratios['convert']):.2f}, prepare + convert "
            f"{geomean(ratios['total']):.2f} (warm, wall clock; below 1 means ours is faster).")
    return "\n\n".join(filter(None, [
        "## Transform time: prepare and convert, against torch.ao FX",
        meta(opts),
        "Both tools get the same torch.ao `QConfigMapping` object: `get_default_qconfig_mapping(\"x86\")` "
        "for static models, `default_dynamic_qconfig` on nn.Linear and nn.LSTM for lstm (global for "
        "mlp: torch.ao fuses its Linear + ReLU and then refuses a Linear-only entry) "
        "(bench/bench_recipes.py). Prepare and convert are timed without calibration, warm, "
        f"interleaved ours / torch.ao / symbolic_trace (each round starting one further along), {opts.rounds} rounds after a warm-up round "
        f"({max(1, opts.rounds // 3)} rounds without warm-up for the 1k-node chain, the zoo having "
        "warmed both tools up), "
        "`gc.collect()` before each call, 1 thread. Ours converts the same calibrated `Prepared` every "
        "round (it is pure); torch.ao's `convert_fx` consumes its input, so each call gets an untimed "
        "`copy.deepcopy` of one calibrated model. Cells: median (min-max) wall clock; **CPU ratio** "
        "is the ratio of CPU-time medians (steadier when other jobs share the 2 vCPUs). "
        "**symbolic_trace alone** is `torch.fx.symbolic_trace(model)`, which both tools pay "
        "(ours through its own tracer); the share is its time over each tool's prepare.",
        head,
        "### prepare (warm)",
        table(["model", "fx nodes", "ours prepare", "torch.ao prepare_fx", "ours / torch.ao", "CPU ratio",
               "symbolic_trace alone", "trace share ours / torch.ao"], prep_rows),
        "### convert (warm, without calibration)",
        table(["model", "ours convert", "torch.ao convert_fx", "ours / torch.ao", "CPU ratio",
               "prepare + convert ours / torch.ao"], conv_rows),
        first,
        notes_block(notes),
    ]))


def first_calls(opts: Options, results: list[dict]) -> str:
    rows = []
    for r in results[:1] if opts.quick else results:
        name = r["label"].split(" [")[0]
        extra = ["--fallback"] if r["fallback"] else []
        got = {tool: worker(opts, "bench_transform.py", ["--first-call", tool, name, *extra])
               for tool in ("ours", "torch.ao")}
        rows.append(_first_row(r, got))
    how = ("in this process (--in-process: not a first call)" if opts.in_process
           else "in a fresh process per tool and model, after `import torch, purequant`")
    return "\n\n".join([
        "### first call",
        f"The first prepare and first convert, {how}; the warm median beside it. torch.ao's first "
        "`prepare_fx` in a process imports torch._inductor (for stack traces), about 1 s.",
        table(["model", "ours prepare", "torch.ao prepare_fx", "ours / torch.ao", "ours convert",
               "torch.ao convert_fx", "ours / torch.ao"], rows),
    ])


def _first_row(r: dict, got: dict) -> list[str]:
    if "error" in got["ours"] or "error" in got["torch.ao"]:
        err = got["ours"].get("error") or got["torch.ao"].get("error")
        return [r["label"], err, "-", "-", "-", "-", "-"]
    o, a = got["ours"], got["torch.ao"]

    def two(key: str) -> list[str]:
        warm_o, warm_a = r[key]["ours"].median, r[key]["torch.ao"].median
        return [f"{fmt_s(o[key])} (warm {fmt_s(warm_o)})", f"{fmt_s(a[key])} (warm {fmt_s(warm_a)})",
                f"{o[key] / a[key]:.2f}"]

    return [r["label"], *two("prepare"), *two("convert")]


# --------------------------------------------------------------------------------- scaling
def section_scaling(opts: Options) -> str:
    import bench_transform as T

    sc = T.scaling(opts.chain_sizes, opts.chain_rounds, opts.ao_chain_sizes)
    rows, ao_notes = [], []
    for r in sc["rows"]:
        ao = r["ao"]
        if ao is None:
            ao_cell = "not run"
        elif "error" in ao:
            ao_cell = "fails"
            ao_notes.append(f"torch.ao at {r['nodes']:,} nodes: {ao['error']}")
        else:
            ao_total = ao["prepare"].median + ao["convert"].median
            ours_total = r["prepare"].median + r["convert"].median
            ao_cell = f"{fmt_s(ao['prepare'].median)} + {fmt_s(ao['convert'].median)} (ours / torch.ao {ours_total / ao_total:.2f})"
        rows.append([f"{r['nodes']:,}", cell(r["prepare"]), cell(r["convert"]),
                     fmt_s(r["prepare"].median + r["convert"].median),
                     fmt_s(r["prepare"].cpu + r["convert"].cpu), ao_cell])
    sl = sc["slopes"]
    verdict = ("meets" if sl and max(sl["total"], sl["total cpu"]) <= TARGET_SLOPE else "misses")
    head = (f"**Headline (scaling):** log-log slope of ours prepare + convert, {opts.chain_sizes[0]:,} to "
            f"{opts.chain_sizes[-1]:,} nodes: {sl.get('total', float('nan')):.2f} wall, "
            f"{sl.get('total cpu', float('nan')):.2f} CPU ({verdict} the target <= {TARGET_SLOPE}); "
            f"prepare {sl.get('prepare', float('nan')):.2f}, convert {sl.get('convert', float('nan')):.2f}.")
    trace = trace_block(opts)
    return "\n\n".join(filter(None, [
        "## Scaling with graph size",
        meta(opts),
        "Conv residual chains (`purequant.models.residual_chain_for_nodes(n, \"conv\")`: per block a "
        "3x3 Conv2d, `F.relu` and `+`), the static x86 mapping, calibrated on one batch (untimed). "
        f"Rounds per size: {', '.join(f'{n:,}: {k}' for n, k in zip(opts.chain_sizes, opts.chain_rounds))} "
        "(warm-up round up to 3k nodes only). Slopes are least-squares fits of log time on log nodes "
        "over all sizes. torch.ao runs once per size, at Python's default recursion limit, up to 3k "
        "nodes: beyond that it fails (below) or, with a raised limit, takes minutes (prepare_fx "
        "scales with slope ~1.8-1.9 here, 214 s at 10k nodes: shared/BENCHMARKING.md).",
        head,
        "### prepare + convert on conv chains (ours), torch.ao where it completes",
        table(["fx nodes", "ours prepare", "ours convert", "ours prepare + convert", "CPU time",
               "torch.ao prepare_fx + convert_fx"], rows),
        "Slopes (wall / CPU): " + ", ".join(
            f"{k} {sl[k]:.2f} / {sl[k + ' cpu']:.2f}" for k in ("prepare", "convert", "total") if k in sl) + ".",
        notes_block(ao_notes),
        trace,
    ]))


def trace_block(opts: Options) -> str:
    import bench_transform as T

    tr = T.trace_scaling(opts.trace_sizes, opts.trace_rounds)
    rows = []
    for r in tr["rows"]:
        base = r["symbolic_trace"]
        rows.append([f"{r['nodes']:,}", fmt_s(base.cpu), fmt_s(r["ours fx->IR->fx"].cpu),
                     ratio(r["ours fx->IR->fx"], base, cpu=True), fmt_s(r["ours capture"].cpu),
                     fmt_s(r["ours trace+emit"].cpu), ratio(r["ours trace+emit"], base, cpu=True),
                     cell(r["ours trace+emit"])])
    sl = tr["slopes"]
    return "\n\n".join([
        "### Trace and emit scaling (bench/bench_trace.py)",
        "`bench_trace.measure` per size: **symbolic_trace** is `torch.fx.symbolic_trace(model)`; "
        "**ours fx->IR->fx** is `from_fx` + `to_graph_module` on a graph our tracer captured once; "
        "**ours capture** our tracer alone; **ours trace+emit** `purequant.trace` + `to_graph_module`. "
        f"Rounds per size: {', '.join(f'{n:,}: {k}' for n, k in zip(opts.trace_sizes, opts.trace_rounds))} "
        "after a warm-up round. CPU time medians (the stable figure on the shared vCPUs); wall clock "
        "of trace+emit in the last column.",
        table(["fx nodes", "symbolic_trace", "ours fx->IR->fx", "ratio", "ours capture",
               "ours trace+emit", "ratio", "trace+emit wall"], rows),
        "Log-log slopes (CPU): " + ", ".join(f"{k} {v:.2f}" for k, v in sl.items()) + ".",
    ])


# ----------------------------------------------------------------------------- calibration
def section_calibration(opts: Options) -> str:
    parts = ["## Calibration overhead", meta(opts)]
    try:
        import bench_calibration as C
    except ImportError as ex:
        return "\n\n".join([*parts, f"_bench/bench_calibration.py has not landed yet ({ex}); "
                                    "this section is a placeholder._"])
    rounds = 5 if opts.quick else 11
    models, observes, obs_header = _calibration_rows(
        C, opts.pick(C.MODELS), C.SHAPES[-1:] if opts.quick else C.SHAPES, rounds)
    clocks = {"wall": "wall clock", "cpu": "CPU time of the thread"}
    tables = []
    for clock, rows in models.items():
        tables.append(f"Per batch (4 samples) / float forward, {clocks.get(clock, clock)}; median (min-max):\n\n"
                      "| model | float forward | purequant calibrate | purequant observed forward | torch.ao |\n"
                      "|---|---|---|---|---|\n" + "\n".join(rows))
    for clock, rows in observes.items():
        tables.append(f"Histogram observe per call, 2048 bins, {clocks.get(clock, clock)}; median:\n\n"
                      + obs_header + "\n" + "|---" * obs_header.count(" | ") + "|---|\n" + "\n".join(rows))
    return "\n\n".join([
        *parts,
        _calibration_headline(next(iter(models.values()), [])),
        "From `bench/bench_calibration.py` (its row functions; see its docstring for the method): "
        "one calibration batch of 4 samples, CPU-aware default config for ours and "
        f"`get_default_qconfig_mapping(\"x86\")` for torch.ao (histogram observers in both), {rounds} "
        "interleaved rounds, 1 thread. Cost per batch as a ratio to the float forward on that batch.",
        *tables,
    ])


def _calibration_rows(C, names: list[str], shapes, rounds: int) -> tuple[dict, dict, str]:
    """bench_calibration's rows by clock, whichever of its two row APIs it has."""
    models: dict[str, list[str]] = {}
    observes: dict[str, list[str]] = {}
    if hasattr(C, "model_rows"):  # {clock: row} per call
        for name in names:
            for clock, row in C.model_rows(name, rounds).items():
                models.setdefault(clock, []).append(row)
        for shape in shapes:
            for clock, row in C.observe_rows(shape, rounds).items():
                observes.setdefault(clock, []).append(row)
        header = ("| activation | torch.histc | purequant histc | purequant observe | "
                  "torch.ao HistogramObserver |")
    else:  # one wall-clock row per call
        models["wall"] = [C.model_row(name, rounds) for name in names]
        observes["wall"] = [C.observe_row(shape, rounds) for shape in shapes]
        header = "| activation | torch.histc | purequant observe | torch.ao HistogramObserver |"
    return models, observes, header


def _calibration_headline(rows: list[str]) -> str:
    """From bench_calibration's rows (`| m | float | 1.2x (..) | 1.1x (..) | 1.7x (..) |`)."""
    import re

    fwd, cal = [], []
    for row in rows:
        x = [float(v) for v in re.findall(r"\| (\d+(?:\.\d+)?)x \(", row)]
        if len(x) == 3:
            cal.append(x[0] / x[2])
            fwd.append(x[1] / x[2])
    return ("**Headline (calibration):** per batch, ours / torch.ao: observed forward "
            f"{geomean(fwd):.2f}, whole `calibrate` call (emits the observed module each call) "
            f"{geomean(cal):.2f} (geometric means over {len(fwd)} models).")


# --------------------------------------------------------------------------------- latency
def section_latency(opts: Options) -> str:
    names = opts.pick(LATENCY_MODELS)
    args = ["--models", ",".join(names), "--batches", ",".join(map(str, opts.batches)),
            "--budget", str(opts.budget)]
    parts, ratios, notes, slow = [], {}, [], []
    for threads in opts.threads:
        got = worker(opts, "bench_latency.py", ["--threads", str(threads), *args], env=PIN)
        print(f"  latency {threads} thread(s): done", file=sys.stderr, flush=True)
        if "error" in got:
            parts.append(f"### {threads} thread(s)\n\nThe worker failed: {got['error']}")
            continue
        notes += got.get("notes", [])
        rows = []
        for r in got["rows"]:
            if "error" in r:
                rows.append([r["label"], "-", r["error"], "-", "-", "-", "-", "-", "-", "-"])
                continue
            t = {k: Stat.from_dict(v) for k, v in r["times"].items()}
            rows.append(_latency_row(r, t))
            ratios.setdefault(threads, []).append(t["ours"].median / t["torch.ao"].median)
            if "profile" in r:
                slow.append(_profile_note(r, t, got["threads"]))
        parts.append(f"### {got['threads']} thread(s)\n\n" + table(
            ["model", "batch", "float ms", "ours ms", "torch.ao ms", "ours speed-up", "torch.ao speed-up",
             "ours / torch.ao", "ratio of mins", "torch.ao eager dynamic ms"], rows))
    summary = "; ".join(
        f"{k} thread(s) geometric mean {geomean(v):.3f}, worst {max(v):.2f} "
        f"({sum(x > TARGET_LATENCY for x in v)} of {len(v)} rows above {TARGET_LATENCY})"
        for k, v in ratios.items())
    pinned = ("in this process (--in-process: no thread pinning)" if opts.in_process else
              "in a fresh subprocess per thread count with OMP_PROC_BIND=close OMP_PLACES=cores set "
              "before torch starts")
    return "\n\n".join(filter(None, [
        "## Latency and speed-up over float",
        meta(opts),
        "Quantized models: static (resnet18, mobilenet_v2, bert) through `purequant.convert` and "
        "`convert_fx` with the same `get_default_qconfig_mapping(\"x86\")` and the same 8 calibration "
        "batches of 4; dynamic (lstm, mlp) through `purequant.quantize_dynamic` and `prepare_fx`/"
        "`convert_fx` with the same dynamic mapping, plus torch.ao's eager `quantize_dynamic` for "
        f"reference. Measured {pinned}; float, ours and torch.ao run interleaved under `no_grad` "
        "(each round starting one further along, so none always follows the float model) "
        f"after 3 warm-up calls, as many rounds as fit {opts.budget:.0f} s (at least 7). Cells: "
        "median (min-max) ms; speed-up = float / quantized medians; ours / torch.ao is the ratio "
        f"of medians (target <= {TARGET_LATENCY}), and beside it the ratio of the minima, which "
        "moves less when other jobs take a vCPU (two threads on two shared vCPUs are often "
        "disturbed: compare the 2-thread float times with the 1-thread ones).",
        f"**Headline (latency):** ours / torch.ao: {summary or 'no rows'}.",
        *parts,
        notes_block(notes),
        _slow_block(slow),
    ]))


def ms_cell(s: Stat) -> str:
    return f"{s.median * 1e3:.2f} ({s.lo * 1e3:.2f}-{s.hi * 1e3:.2f})"


def _latency_row(r: dict, t: dict[str, Stat]) -> list[str]:
    f = t["float"].median
    eager = ms_cell(t["torch.ao eager"]) if "torch.ao eager" in t else "-"
    return [r["label"], str(r["batch"]), ms_cell(t["float"]), ms_cell(t["ours"]), ms_cell(t["torch.ao"]),
            f"{f / t['ours'].median:.2f}x", f"{f / t['torch.ao'].median:.2f}x",
            f"**{t['ours'].median / t['torch.ao'].median:.2f}**", f"{t['ours'].lo / t['torch.ao'].lo:.2f}", eager]


def _profile_note(r: dict, t: dict[str, Stat], threads: int) -> str:
    """Which ops (and how much time outside ops) make ours slower, from torch.profiler."""
    po, pa = r["profile"]["ours"], r["profile"]["torch.ao"]
    keys = set(po["ops"]) | set(pa["ops"])
    zero = {"ms": 0.0, "calls": 0.0}
    diffs = sorted(((po["ops"].get(k, zero)["ms"] - pa["ops"].get(k, zero)["ms"], k) for k in keys), reverse=True)
    items = [f"`{k}` {d:+.2f} ms ({po['ops'].get(k, zero)['calls']:g} vs {pa['ops'].get(k, zero)['calls']:g} calls)"
             for d, k in diffs[:4] if d > 0.005]
    calls = [f"`{k}` {po['ops'].get(k, zero)['calls']:g} vs {pa['ops'].get(k, zero)['calls']:g}"
             for k in sorted(keys) if po["ops"].get(k, zero)["calls"] != pa["ops"].get(k, zero)["calls"]]
    return (f"- **{r['label']}, batch {r['batch']}, {threads} thread(s)**: ours "
            f"{t['ours'].median * 1e3:.2f} ms, torch.ao {t['torch.ao'].median * 1e3:.2f} ms. Under the "
            f"profiler (ms per forward, self CPU): ours {po['wall_ms']:.2f} ms, torch.ao {pa['wall_ms']:.2f} ms; "
            f"outside any op (the GraphModule's Python) {po['outside_ops_ms']:.2f} vs {pa['outside_ops_ms']:.2f} ms. "
            f"Largest extra op time in ours: {', '.join(items) or 'none above 0.005 ms'}. "
            f"Op call counts that differ (ours vs torch.ao per forward): {', '.join(calls) or 'none'}.")


def _slow_block(slow: list[str]) -> str:
    if not slow:
        return ""
    return "\n\n".join([
        f"### Where ours is more than {TARGET_LATENCY:.2f}x torch.ao",
        "Each such row was profiled with torch.profiler: 3 interleaved windows of 10 forwards of each "
        "model on the same inputs, per op the minimum over the windows (ms per forward, self CPU). "
        "Different call counts point at a lowering difference (quantize/dequantize placement, "
        "layout conversions); equal counts with more time outside ops point at Python overhead; "
        "equal counts and equal op times mean the gap is timing noise.",
        "\n".join(slow),
    ])


# -------------------------------------------------------------------------------- numerics
NUMERIC_RESULTS: dict[str, dict] = {}  # name -> bench_numerics.numerics(name), shared with size


def numeric_results(opts: Options) -> list[dict]:
    import bench_numerics as N

    out = []
    for name in opts.pick(ZOO_MODELS):
        if name not in NUMERIC_RESULTS:
            NUMERIC_RESULTS[name] = N.numerics(name)
            FALLBACK_CACHE[name] = NUMERIC_RESULTS[name]["fallback"]
            print(f"  numerics {name}: done", file=sys.stderr, flush=True)
        out.append(NUMERIC_RESULTS[name])
    return out


def db(v) -> str:
    if isinstance(v, str):
        return f"fails: {v}"
    return "inf (bit-identical)" if math.isinf(v) else f"{v:.1f}"


def section_numerics(opts: Options) -> str:
    import bench_numerics as N

    results = numeric_results(opts)
    rows, gaps, notes = [], [], []
    for r in results:
        s = r["sqnr"]
        rows.append([r["label"], "dynamic" if r["dynamic"] else "static", db(s.get("ours", "-")),
                     db(s.get("ours default", "-")), db(s.get("torch.ao", "-")),
                     db(s["torch.ao eager"]) if "torch.ao eager" in s else "-", db(s.get("ours vs torch.ao", "not computed"))])
        if all(isinstance(s.get(k), float) for k in ("ours", "torch.ao")):
            gaps.append(s["ours"] - s["torch.ao"])
        notes += r["notes"]
    try:
        import torchao  # noqa: F401

        pt2e = "torchao is importable but its pt2e flow is not measured here yet."
    except ImportError:
        pt2e = ("torchao (the pt2e flow) is not installed in this venv, and torch 2.13 no longer "
                "ships `torch.ao.quantization.quantize_pt2e`: no pt2e column.")
    head = ("**Headline (numerics):** SQNR of ours minus torch.ao FX with the same mapping, median "
            f"{statistics.median(gaps):+.2f} dB over {len(gaps)} models (min {min(gaps):+.2f}, max "
            f"{max(gaps):+.2f})." if gaps else "**Headline (numerics):** no model quantized with both tools.")
    return "\n\n".join(filter(None, [
        "## Numerics: SQNR against float",
        meta(opts),
        f"SQNR = 20 log10(‖y_float‖ / ‖y_float − y_quant‖) in dB on one evaluation batch (the zoo's "
        f"example inputs at batch {N.EVAL_BATCH}, a seed no calibration batch uses), every variant "
        "calibrated on the same 8 batches of 4. **ours** uses torch.ao's mapping (as in the latency "
        "section); **ours default** is our CPU-aware default (`purequant.prepare(model, None, ...)`, "
        "`quantize_dynamic(model, x)`: full 8-bit activations on CPUs with VNNI, 7-bit otherwise); "
        "**ours vs torch.ao** is the SQNR of our output against torch.ao's (inf: bit-identical). "
        "The zoo's weights and data are random: this compares toolchains, not accuracy (accuracy "
        "needs real data; see the digits demo).",
        head,
        table(["model", "kind", "ours (torch.ao mapping)", "ours default (CPU-aware)", "torch.ao FX",
               "torch.ao eager dynamic", "ours vs torch.ao"], rows),
        pt2e,
        notes_block(notes),
    ]))


# ------------------------------------------------------------------------------------ size
def section_size(opts: Options) -> str:
    results = numeric_results(opts)
    rows, rel = [], []
    for r in results:
        z = r["size"]
        o, a = z.get("ours params"), z.get("torch.ao params")
        rows.append([r["label"], fmt_bytes(z["float state_dict"]), fmt_bytes(o) if o else "-",
                     fmt_bytes(z["ours file"]) if "ours file" in z else "-",
                     fmt_bytes(a) if a else "-", fmt_bytes(z["torch.ao state_dict"]) if "torch.ao state_dict" in z else "-",
                     f"{o / a:.3f}" if o and a else "-", f"{z['float params'] / o:.2f}x" if o else "-"])
        if o and a:
            rel.append(o / a)
    mem_rows, mem_ratio = memory_rows(opts)
    mem_how = ("in this process (--in-process: not a real measurement)" if opts.in_process else
               "in a fresh process per tool and model")
    head = (f"**Headline (size):** quantized parameter bytes ours / torch.ao: geometric mean "
            f"{geomean(rel):.3f}; peak resident memory of prepare + calibrate + convert ours / torch.ao: "
            f"geometric mean {geomean(mem_ratio):.2f} over the {len(mem_ratio)} models whose peaks "
            f"exceed 1 MiB (max {max(mem_ratio, default=float('nan')):.2f}).")
    return "\n\n".join([
        "## Model size and peak memory",
        meta(opts),
        "**float state_dict**: `torch.save(model.state_dict())` bytes. **params**: bytes of every "
        "tensor a model holds, packed weights unpacked to their int8 weight, bias and per-channel "
        "scales and zero points, each constant counted once (`bench_numerics.param_bytes`, the "
        "same count for both tools). **ours file**: `purequant.save` (.pq) bytes. **torch.ao state_dict**: "
        "`torch.save(quantized.state_dict())` bytes (packed params serialised).",
        head,
        table(["model", "float state_dict", "ours params", "ours file", "torch.ao params",
               "torch.ao state_dict", "params ours / torch.ao", "float / ours params"], rows),
        "### peak memory of prepare + calibrate + convert",
        f"Measured {mem_how}, after a warm-up quantization of the digits CNN (imports, caches). "
        "**peak RSS**: the kernel's resident-set high-water mark (VmHWM, reset through "
        "/proc/self/clear_refs at the start of each phase) above the resident set just before "
        "`prepare`; the bold figure is the largest over the three phases, each phase's in "
        "parentheses (calibration on the same 8 batches of 4: convert needs it). **retained**: "
        "resident set after convert, everything still alive (for ours the `Quantized` record on "
        "the module keeps the `Prepared` value and the lowered graph's params). **Python peak**: "
        "tracemalloc's peak in a second pass of the same steps (Python objects only: tensor "
        "storage is not traced). The model's own weights are resident before and not counted; "
        "memory freed by the warm-up is reused, so a small model can show 0 (no ratio is given "
        "below 1 MiB); `>=` marks a lower bound (the mark could not be reset and did not move).",
        table(["model", "ours peak RSS (prepare / calibrate / convert)",
               "torch.ao peak RSS (prepare / calibrate / convert)", "ours / torch.ao", "ours retained",
               "torch.ao retained", "ours Python peak", "torch.ao Python peak"], mem_rows),
    ])


def _maybe_bytes(n: int | None) -> str:
    return "not measured" if n is None else fmt_bytes(n)


MIN_PEAK = 1 << 20  # below 1 MiB a peak is allocator noise (memory the warm-up freed is reused)


def memory_rows(opts: Options) -> tuple[list[list[str]], list[float]]:
    names = opts.pick(ZOO_MODELS) + ([] if opts.models or opts.quick else ["chain:1000"])
    if opts.quick and not opts.models:
        names = names[:1]
    rows, ratios = [], []
    for name in names:
        fb = ["--fallback"] if not name.startswith("chain") and needs_fallback(name) else []
        got = {t: worker(opts, "bench_numerics.py", ["--memory", t, name, *fb]) for t in ("ours", "torch.ao")}
        if any("error" in g for g in got.values()):
            rows.append([name, *(g.get("error", "ok") for g in got.values()), "-", "-", "-"])
            continue
        o, a = got["ours"], got["torch.ao"]

        def rss(g: dict) -> str:
            ph = " / ".join(fmt_bytes(v) for v in g["phases"].values())
            return ("" if g["exact"] else ">= ") + f"**{fmt_bytes(g['peak_rss_increase'])}** ({ph})"

        big = min(o["peak_rss_increase"], a["peak_rss_increase"]) >= MIN_PEAK
        r = o["peak_rss_increase"] / a["peak_rss_increase"] if big else None
        rows.append([o["label"], rss(o), rss(a), f"{r:.2f}" if r else "too small",
                     fmt_bytes(o["retained"]), fmt_bytes(a["retained"]),
                     _maybe_bytes(o["python_peak"]), _maybe_bytes(a["python_peak"])])
        if r:
            ratios.append(r)
    return rows, ratios


# ------------------------------------------------------------------------------------ page
RUNNERS = {
    "transform": section_transform, "scaling": section_scaling, "calibration": section_calibration,
    "latency": section_latency, "numerics": section_numerics, "size": section_size,
}


def header(opts: Options, blocks: dict[str, str]) -> str:
    return "\n\n".join([
        "Every figure on this page except the IR cost model comes from one command, "
        "`.venv/bin/python bench/run_all.py` (`--only SECTION` reruns sections and keeps the "
        "others; each section says when and how it was measured). Method: shared/BENCHMARKING.md: "
        "ours and torch.ao side by side in one process, interleaved, warm, medians with min-max, "
        "ratios of medians from the same run. Ratios are ours / torch.ao: below 1 means ours is "
        "faster or smaller.",
        "Machine (as of the last run of any section):\n\n" + "\n".join(f"- {x}" for x in machine_lines()),
        "\n\n".join(bench_doc.headlines(blocks)),
    ])


def render(opts: Options, only: list[str], old: dict[str, str]) -> str:
    fresh = {}
    for name in SECTIONS:
        if name in only:
            t0 = time.perf_counter()
            fresh[name] = RUNNERS[name](opts)
            print(f"section {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    merged = {**old, **fresh}
    fresh["header"] = header(opts, {k: merged[k] for k in ORDER if k in merged and k != "header"})
    return bench_doc.assemble(ORDER, fresh, old)


def main(argv: list[str] | None = None) -> str:
    """Run the sections asked for and write (or print) the page; returns the page's text."""
    torch.set_num_threads(1)
    opts, only, out = options(argv)
    bench_timing.COLLECT = not opts.quick
    old_text = open(DOC).read() if os.path.exists(DOC) else ""
    page = render(opts, only, bench_doc.parse(old_text))
    if out == "-":
        sys.stdout.write(page)
    else:
        with open(out, "w") as f:
            f.write(page)
        print(f"wrote {out}", file=sys.stderr)
    return page


if __name__ == "__main__":
    main()

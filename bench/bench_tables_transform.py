"""The transform-side sections of `run_all.py`: transform time (warm and first call), scaling
with graph size (with trace and emit), and calibration overhead (from bench_calibration.py).
Each `section_*` function measures and returns its markdown.
"""

from __future__ import annotations

import sys

import bench_recipes as R
from bench_run import (
    FALLBACK_CACHE,
    TARGET_SLOPE,
    ZOO_MODELS,
    Options,
    geomean,
    meta,
    notes_block,
    worker,
)
from bench_timing import cell, fmt_s, ratio, table


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
                f"{o[key] / a[key]:.2f}" if o[key] >= 0.1 * a[key] else f"{o[key] / a[key]:.3f}"]

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

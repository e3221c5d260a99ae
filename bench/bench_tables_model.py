"""The sections of `run_all.py` about the quantized models: latency and speed-up over float
(one worker process per thread count), numerics (SQNR), model size and peak memory.
Each `section_*` function measures and returns its markdown.
"""

from __future__ import annotations

import math
import statistics
import sys

from bench_run import (
    FALLBACK_CACHE,
    LATENCY_MODELS,
    PIN,
    TARGET_LATENCY,
    ZOO_MODELS,
    Options,
    geomean,
    meta,
    needs_fallback,
    notes_block,
    worker,
)
from bench_timing import Stat, fmt_bytes, table


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

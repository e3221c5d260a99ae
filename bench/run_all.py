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
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_doc  # noqa: E402
import bench_timing  # noqa: E402
import torch  # noqa: E402
from bench_run import Options  # noqa: E402
from bench_tables_model import section_latency, section_numerics, section_size  # noqa: E402
from bench_tables_transform import (  # noqa: E402
    section_calibration,
    section_scaling,
    section_transform,
)
from bench_timing import machine_lines  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
SECTIONS = ("transform", "scaling", "calibration", "latency", "numerics", "size")
ORDER = ["header", "keep-ir", "transform", "scaling", "keep-trace-notes", "calibration",
         "latency", "numerics", "size", "keep-analysis"]


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

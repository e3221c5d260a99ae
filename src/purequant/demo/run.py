"""`purequant demo`: train the digits CNN, quantize it through the staged pipeline, measure, report.

    result = run_demo(DemoOptions())                 # what `purequant demo` does
    result = run_demo(DemoOptions(model="mlp", report_dir=None))

Deterministic up to timings: the digits split, initial weights and shuffling come from `seed`
through local generators, the zoo models and their inputs are fixed, and everything runs on one
thread (restored afterwards).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import torch
from attrs import frozen

from .. import calibrate, convert, prepare
from ..convert_api import Quantized, quantized_record
from ..errors import ConfigError
from ..models import digits_cnn, get
from . import measure
from .report import write_report
from .stages import graph_pool, stage_views
from .table import Results, format_table
from .train import EPOCHS, load_digits_split, progress_bar, train
from .views import observed_view, quantized_view

MODELS = ("digits", "resnet18", "mobilenet_v2", "bert", "lstm", "mlp")
MODES = ("static", "dynamic", "fp16")
CALIBRATION_BATCH = 128  # digits: every training image, in batches of this size
ZOO_CALIBRATION = (4, 4)  # zoo models: 4 random batches of 4
ZOO_EVAL_BATCH = 8


class DemoError(ConfigError):
    """The demo cannot run this combination (yet)."""


@frozen
class DemoOptions:
    """What `purequant demo` was asked to do (the CLI's options, as a value).

    Attributes:
        model: "digits" (trained on scikit-learn's digits) or a zoo model (random data).
        mode: "static" (int8, calibrated), "dynamic" (int8 weights) or "fp16".
        backend: x86, fbgemm, qnnpack or onednn.
        report_dir: folder of the HTML report; None writes none.
        seed: seed of the digits split, initial weights and shuffling.
        epochs: training epochs (digits only).
    """

    model: str = "digits"
    mode: str = "static"
    backend: str = "x86"
    report_dir: Path | None = Path("purequant-report")
    seed: int = 0
    epochs: int = EPOCHS


@frozen(eq=False)
class DemoRun:
    """What the demo produced: the numbers, the float and quantized models, the report path."""

    results: Results
    float_model: torch.nn.Module
    quantized: torch.fx.GraphModule
    report: Path | None
    seconds: float

    @property
    def record(self) -> Quantized:
        return quantized_record(self.quantized)


@frozen(eq=False)
class Workload:
    """A model with its inputs: example, calibration batches, evaluation inputs and labels."""

    name: str
    model: torch.nn.Module
    example: tuple
    calibration: list
    eval_inputs: tuple
    labels: torch.Tensor | None
    train_seconds: float = 0.0


def run_demo(options: DemoOptions, out: TextIO | None = None, err: TextIO | None = None) -> DemoRun:
    """Run the demo; print the table on `out` (stdout) and progress on `err` (stderr)."""
    out, err = out or sys.stdout, err or sys.stderr
    _check(options)
    start = time.perf_counter()
    with one_thread(), tempfile.TemporaryDirectory(prefix="purequant-demo-") as tmp:
        dump = Path(tmp) if options.report_dir is not None else None
        work = workload(options, err)
        quantized = quantize(work, options, dump, progress=err is sys.stderr)
        results = measure_all(work, quantized, options)
        out.write(format_table(results))
        report = None
        if options.report_dir is not None:
            report = _write_report(options.report_dir, results, quantized_record(quantized), dump)
    seconds = time.perf_counter() - start
    trained = f" (training {work.train_seconds:.1f} s)" if work.train_seconds else ""
    out.write(f"\ndone in {seconds:.1f} s{trained}\n")
    if report is not None:
        out.write(f"report: {report}\n")
    return DemoRun(results, work.model, quantized, report, seconds)


def _check(options: DemoOptions) -> None:
    for value, valid, what in ((options.model, MODELS, "model"), (options.mode, MODES, "mode")):
        if value not in valid:
            raise DemoError(f"unknown {what} {value!r}", hint=f"choose one of {', '.join(valid)}")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def workload(options: DemoOptions, err: TextIO) -> Workload:
    """The digits CNN trained on the digits, or a zoo model with its deterministic random inputs."""
    if options.model != "digits":
        entry = get(options.model)
        calib = list(entry.calibration_batches(*ZOO_CALIBRATION))
        return Workload(entry.name, entry.build(), entry.example_inputs(), calib,
                        entry.example_inputs(ZOO_EVAL_BATCH), None)
    data = load_digits_split(options.seed)
    start = time.perf_counter()
    model = train(digits_cnn(seed=options.seed), data, seed=options.seed, epochs=options.epochs,
                  progress=progress_bar(err, options.epochs))
    seconds = time.perf_counter() - start
    calib = [(data.train_x[i:i + CALIBRATION_BATCH],) for i in range(0, len(data.train_x), CALIBRATION_BATCH)]
    return Workload("digits CNN", model, (data.train_x[:1],), calib, (data.test_x,), data.test_y, seconds)


def quantize(work: Workload, options: DemoOptions, dump: Path | None, *,
             progress: bool = False) -> torch.fx.GraphModule:
    """prepare -> calibrate -> convert (static), or prepare -> convert with a dynamic qconfig.

    The dynamic path is `purequant.quantize_dynamic` spelled out, so that `prepare` can dump
    its stages for the report.
    """
    if options.mode == "static":
        prepared = prepare(work.model, None, work.example, backend=options.backend, dump_dir=_s(dump))
        prepared = calibrate(prepared, work.calibration, progress=progress)
    else:
        prepared = prepare(work.model, dynamic_qconfig(options.mode), work.example,
                           backend=options.backend, dump_dir=_s(dump))
    q = convert(prepared)
    check_lowered(quantized_record(q), options)
    return q


def dynamic_qconfig(mode: str) -> Any:
    from ..qconfig import default_dynamic_qconfig_spec, float16_qconfig_spec

    return float16_qconfig_spec() if mode == "fp16" else default_dynamic_qconfig_spec()


def check_lowered(record: Quantized, options: DemoOptions) -> None:
    """Refuse a result where lowering quantized nothing (its numbers would mean nothing)."""
    lower = record.records.get("lower")
    if lower is not None and lower.lowered:
        return
    matched = len({m.root for m in record.prepared.records["find_matches"].matches.values()})
    raise DemoError(
        f"{options.mode} quantization of {options.model} is not supported by the lowering yet "
        f"({matched} matches found, none lowered)",
        stage="lower", hint="try --mode static, or see the lower record: purequant.convert(...).meta['purequant']")


def measure_all(work: Workload, q: torch.fx.GraphModule, options: DemoOptions) -> Results:
    """Accuracy (digits), SQNR of the outputs, parameter bytes, batch-1 latency, stage times."""
    f_out = measure.logits(work.model, work.eval_inputs)
    q_out = measure.logits(q, work.eval_inputs)
    accuracy = None
    if work.labels is not None:
        accuracy = (measure.accuracy(f_out, work.labels), measure.accuracy(q_out, work.labels))
    one = tuple(x[:1] for x in work.eval_inputs)
    latency = measure.interleaved_latency([work.model, q], one)
    record = quantized_record(q)
    return Results(
        work.name, options.mode, options.backend, accuracy, len(f_out),
        (measure.param_bytes(work.model), measure.param_bytes(q)), (latency[0], latency[1]),
        measure.sqnr_db(f_out, q_out), tuple((r.name, r.seconds) for r in record.stage_records),
        work.train_seconds)


def _write_report(folder: Path, results: Results, record: Quantized, dump: Path | None) -> Path:
    graphs = (record.prepared.traced.graph, record.prepared.graph, record.graph, record.folded_graph)
    pool = graph_pool(graphs, dump, record.prepared.stage_records)
    views = (observed_view(record), quantized_view(record))
    return write_report(folder, results, record, views, stage_views(record.stage_records, pool, len(record.prepared.stage_records)))


def _s(path: Path | None) -> str | None:
    return None if path is None else str(path)

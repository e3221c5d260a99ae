"""The `purequant` command line: one small function per subcommand.

    purequant quantize zoo:digits --calibrate random --out digits.pq    quantize and save
    purequant show resnet18            trace a zoo model and print its graph (text format)
    purequant show digits.pq           print a saved model's graph (or a saved .graph)
    purequant explain digits.pq features_0_0    why a node was (not) quantized
    purequant replay dump/001_fuse     re-run one dumped stage; exit 0 if equal, 1 if not
    purequant demo                     train, quantize and compare the digits CNN; HTML report

Errors print as one line plus a hint and exit with code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import pickle
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import ConfigError, PurequantError
from .ir import Graph, parse_graph, print_graph

EXIT_OK, EXIT_DIFFERENT, EXIT_ERROR = 0, 1, 2


# ------------------------------------------------------------------ show
def _graph_file(path: Path) -> Graph:
    return parse_graph(path.read_text())


# Saved artifacts `show` can read, by file suffix; add loaders here as formats appear. Golden
# tests' .before/.after files are in the text format too.
def _saved_model(path: Path) -> Graph:
    from .saving import read_artifact

    return read_artifact(path, tensors=False).graph


ARTIFACT_LOADERS: dict[str, Callable[[Path], Graph]] = {
    ".graph": _graph_file, ".before": _graph_file, ".after": _graph_file, ".pq": _saved_model,
}


def load_graph(source: str) -> Graph:
    """The graph named by `source`: a path to a saved artifact, else a zoo model name."""
    path = Path(source)
    if not path.exists() and path.suffix in ARTIFACT_LOADERS:
        raise ConfigError(f"no such file: {source}")
    if path.exists():
        loader = ARTIFACT_LOADERS.get(path.suffix)
        if loader is None:
            raise ConfigError(f"cannot show {source}: unknown artifact type",
                              hint=f"show reads {', '.join(ARTIFACT_LOADERS)} files or zoo model names")
        return loader(path)
    return _trace_zoo_model(source)


def _trace_zoo_model(name: str) -> Graph:
    from .models import get
    from .trace import trace

    entry = get(name)
    return trace(entry.build(), entry.example_inputs(), leaf_modules=entry.leaf_modules).graph


def cmd_show(args: argparse.Namespace) -> int:
    """Print a model's graph in the text format."""
    sys.stdout.write(print_graph(load_graph(args.model), meta=not args.no_meta))
    return EXIT_OK


# ------------------------------------------------------------------ explain
def cmd_explain(args: argparse.Namespace) -> int:
    """Print one node's decision log, stored in a saved model."""
    from .saving import explain

    print(explain(args.model, args.node))
    return EXIT_OK


# ------------------------------------------------------------------ quantize
def cmd_quantize(args: argparse.Namespace) -> int:
    """Build, calibrate, convert and save a model; print a one-screen summary."""
    from .saving import load, save

    _check_mode_options(args)
    model, entry = load_model(args.model)
    calib = _calibration_batches(args, entry) if args.mode == "static" else None
    example = _example_inputs(args, entry, calib)
    quantized = _quantize(model, example, calib, args)
    out = save(quantized, args.out)
    loaded = load(out)  # the summary measures what the file gives back
    quality = _sqnr(model, loaded, _eval_batch(args, entry, example))
    print(_summary(args, model, loaded, out, quality, calib))
    return EXIT_OK


def _check_mode_options(args: argparse.Namespace) -> None:
    if args.mode == "static" and args.calibrate is None:
        raise ConfigError("static quantization needs calibration data",
                          hint="add --calibrate random (seeded random inputs) or --calibrate FILE.pt")
    if args.mode != "static" and args.calibrate is not None:
        raise ConfigError(f"--calibrate applies to static quantization, not --mode {args.mode}",
                          hint="drop --calibrate: dynamic and fp16 quantization need no calibration")
    if args.mode != "static" and args.reference:
        raise ConfigError(f"--reference applies to static quantization, not --mode {args.mode}",
                          hint="drop --reference, or use --mode static")


def _quantize(model: Any, example: tuple, calib: list | None, args: argparse.Namespace) -> Any:
    from .api import calibrate, prepare
    from .convert_api import convert
    from .qconfig import default_dynamic_qconfig_spec, float16_qconfig_spec

    qconfig = {"static": None, "dynamic": default_dynamic_qconfig_spec, "fp16": float16_qconfig_spec}[args.mode]
    prepared = prepare(model, qconfig and qconfig(), example, backend=args.backend, dump_dir=args.dump)
    if calib is not None:
        prepared = calibrate(prepared, _progress(calib, show=not args.quiet and sys.stderr.isatty()))
    return convert(prepared, reference=args.reference, dump_dir=args.dump)


def load_model(source: str) -> tuple[Any, Any]:
    """(model, zoo entry or None) for `zoo:NAME`, `NAME` of the zoo, `pkg.mod:FACTORY` or `file.py:FACTORY`."""
    from .models import ZOO, get

    if source.startswith("zoo:") or (":" not in source and source in ZOO):
        entry = get(source.removeprefix("zoo:"))
        return entry.build(), entry
    module_name, colon, factory_name = source.rpartition(":")
    if not colon or not module_name or not factory_name:
        raise ConfigError(f"cannot read the model {source!r}: expected MODULE:FACTORY or zoo:NAME",
                          hint="e.g. mymodels.py:build, mypkg.models:resnet, zoo:resnet18")
    factory = getattr(_import(module_name), factory_name, None)
    if not callable(factory):
        raise ConfigError(f"{module_name} has no function {factory_name!r}",
                          hint="FACTORY names a function (or class) that takes no arguments and returns the model")
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"{source}() returned an object of type {type(model).__name__}, not a torch.nn.Module",
                          hint="FACTORY must return the model to quantize")
    return model, None


def _import(name: str) -> Any:
    """A module by dotted name (found from the current folder too) or by `.py` path."""
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"no such file: {name}", hint="MODULE is a dotted module name or the path of a .py file")
        known = sys.modules.get(path.stem)
        if known is not None and Path(getattr(known, "__file__", "") or "").resolve() != path.resolve():
            raise ConfigError(f"cannot import {name}: a module named {path.stem!r} is already loaded",
                              hint="rename the file, or import it by its dotted module name")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        # Registered so the classes it defines have an importable qualified name.
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    sys.path.insert(0, os.getcwd())  # what `python -m` would do; the console script does not
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"cannot import {name}: {e}",
                          hint="run from the folder holding it, or pass the .py file's path") from None
    finally:
        sys.path.remove(os.getcwd())


_DTYPES = {"float": torch.float32, "float32": torch.float32, "double": torch.float64,
           "float64": torch.float64, "long": torch.int64, "int64": torch.int64, "int": torch.int32,
           "int32": torch.int32}


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated shape such as 1,3,224,224") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every dimension must be at least 1")
    return shape


def _random_batch(shape: tuple[int, ...], dtype: torch.dtype, seed: int, high: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g, dtype=dtype),)
    return (torch.randint(0, high, shape, generator=g, dtype=dtype),)


def _calibration_batches(args: argparse.Namespace, entry: Any) -> list[tuple]:
    """Input tuples for calibration: seeded random ones, or those of a .pt file."""
    if args.calibrate != "random":
        return read_batches(args.calibrate)[: args.batches]
    count = args.batches or 8
    if args.example_shape is not None:
        dtype = _DTYPES[args.example_dtype]
        return [_random_batch(args.example_shape, dtype, args.seed + 1 + i, args.int_high) for i in range(count)]
    if entry is not None:
        return list(entry.calibration_batches(count))
    raise ConfigError("--calibrate random needs the input shape",
                      hint="add --example-shape, e.g. --example-shape 1,3,224,224")


def read_batches(path: str) -> list[tuple]:
    """Calibration batches from a .pt file read with torch.load(weights_only=True): a tensor
    whose first dimension counts batches, or a list of tensors (or of tuples, one per input)."""
    if not Path(path).is_file():
        raise ConfigError(f"--calibrate {path}: no such file", hint="pass random, or a .pt file saved with torch.save")
    try:
        data = torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ConfigError(f"cannot read {path} with torch.load(weights_only=True): {_first_line(e)}",
                          hint="save only tensors (or lists of tensors) for calibration") from None
    if isinstance(data, torch.Tensor):
        return [(data[i],) for i in range(data.shape[0])]
    if isinstance(data, (list, tuple)) and data:
        batches = [b if isinstance(b, tuple) else tuple(b) if isinstance(b, list) else (b,) for b in data]
        if all(isinstance(t, torch.Tensor) for b in batches for t in b):
            return batches
    raise ConfigError(f"{path} holds a {type(data).__name__}; expected a tensor or a list of tensors",
                      hint="torch.save(torch.stack(batches), path) or torch.save([b1, b2, ...], path)")


def _example_inputs(args: argparse.Namespace, entry: Any, calib: list | None) -> tuple:
    if args.example_shape is not None:
        return _random_batch(args.example_shape, _DTYPES[args.example_dtype], args.seed, args.int_high)
    if entry is not None:
        return entry.example_inputs()
    if calib:
        return calib[0]
    raise ConfigError("the model's input shape is unknown", hint="add --example-shape, e.g. --example-shape 1,3,224,224")


def _eval_batch(args: argparse.Namespace, entry: Any, example: tuple) -> tuple:
    """One random batch no calibration saw: the zoo's own kind of input, or one like `example`."""
    seed = args.seed + 10_000
    if entry is not None and args.example_shape is None:
        return entry.make_batch(4, torch.Generator().manual_seed(seed))
    return random_like(example, seed)


def random_like(example: tuple, seed: int) -> tuple:
    """A random batch shaped like `example`, with its mean and spread (floats) or its range (ints)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in example:
        if t.dtype.is_floating_point:
            spread = t.std() if t.numel() > 1 else torch.ones(())
            out.append(t.mean() + spread * torch.randn(t.shape, generator=g, dtype=t.dtype))
        else:
            low, high = int(t.min()), int(t.max()) + 1
            out.append(torch.randint(low, high, t.shape, generator=g, dtype=t.dtype))
    return tuple(out)


def _progress(batches: list, *, show: bool) -> Iterator:
    """Yield `batches`, drawing a bar on stderr as each one starts (and at the end)."""
    def draw(done: int) -> None:
        filled = 30 * done // max(len(batches), 1)
        sys.stderr.write(f"\rcalibrating [{'#' * filled}{'.' * (30 - filled)}] {done}/{len(batches)}")
        sys.stderr.flush()

    for i, batch in enumerate(batches):
        if show:
            draw(i)
        yield batch
    if show:
        draw(len(batches))
        sys.stderr.write("\n")


def _sqnr(model: Any, loaded: Any, batch: tuple) -> float | None:
    """Signal-to-quantization-noise ratio (dB) of the loaded model against the float one."""
    from .backends.engine import quantized_engine
    from .backends.table import backend

    record = loaded.meta["purequant"]
    with torch.no_grad():
        want = _flat(model(*batch))
        with quantized_engine(None if record.reference else backend(record.backend).engine):
            got = _flat(loaded(*batch))
    if want is None or got is None or want.shape != got.shape:
        return None
    noise = (want - got).pow(2).sum()
    return math.inf if noise == 0 else float(10 * torch.log10(want.pow(2).sum() / noise))


def _flat(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value.detach().double().reshape(-1)
    if isinstance(value, (tuple, list)) and value:
        parts = [_flat(v) for v in value]
        return None if any(p is None for p in parts) else torch.cat(parts)
    return None


def _summary(args: argparse.Namespace, model: Any, loaded: Any, out: Path, quality: float | None,
             calib: list | None) -> str:
    record = loaded.meta["purequant"]
    lowered, left = op_counts(record)
    mode = f"{args.mode}, {'reference' if args.reference else 'native'}, backend {args.backend}"
    source = "random inputs" if args.calibrate == "random" else args.calibrate
    lines = [f"quantized {args.model} ({mode}) -> {out}"]
    if calib is not None:
        lines.append(f"  calibration: {len(calib)} batches of {source}")
    lines.append(f"  ops quantized: {sum(lowered.values())}{_counts(lowered)}")
    lines.append(f"  ops float:     {sum(left.values())}{_counts(left)}")
    lines.append(f"  size: {_mb(_bytes(_tensors(model)))} float parameters -> {_mb(_bytes(record.params.values()))} "
                 f"saved ones ({_mb(out.stat().st_size)} file)")
    lines.append("  SQNR: " + ("n/a (outputs are not float tensors)" if quality is None
                              else "identical outputs" if math.isinf(quality) else f"{quality:.1f} dB")
                 + " on one random batch, float model vs the saved file")
    lines.append(f"  next: purequant show {out}  |  purequant explain {out} NODE")
    return "\n".join(lines)


# Nodes that only move values between float and quantized (or pick tuple items); neither side
# of the count.
_PLUMBING = frozenset({"quantize_per_tensor", "quantize_per_channel", "dequantize", "dequantize_per_tensor",
                       "dequantize_per_channel", "getitem"})


def op_counts(record: Any) -> tuple[Counter, Counter]:
    """(quantized, float) op counts by short name, over the compute nodes of the graph a model runs.

    Quantized: the roots of matches `lower` lowered, and the nodes it emitted for them. Float:
    every other call, quantize/dequantize plumbing left out. O(n).
    """
    lower = record.records.get("lower")
    roots = {m.root for m in lower.lowered} if lower is not None else set()
    quantized: Counter = Counter()
    left: Counter = Counter()
    for node in record.folded_graph.node_list():
        if node.op not in ("call_function", "call_method", "call_module"):
            continue
        name = record.modules[node.target].type if node.op == "call_module" else node.target
        short = name.rsplit(".", 1)[-1]
        if short in _PLUMBING:
            continue
        made = node.id in roots or node.meta.get("lowered_from") in roots
        (quantized if made else left)[short] += 1
    return quantized, left


def _counts(counter: Counter) -> str:
    items = [f"{k} x{v}" if v > 1 else k for k, v in counter.most_common(6)]
    more = len(counter) - len(items)
    return "  (" + ", ".join(items) + (f", +{more} more" if more > 0 else "") + ")" if items else ""


def _tensors(model: Any) -> list:
    return list({id(t): t for t in [*model.parameters(), *model.buffers()]}.values())


def _bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 10_000 else f"{n / 1e3:.1f} kB"


# ------------------------------------------------------------------ replay
def cmd_replay(args: argparse.Namespace) -> int:
    """Re-run one dumped stage and print how its output differs from the dump."""
    from .pipeline.replay import replay

    result = replay(args.dir, trust=tuple(args.trust))
    sys.stdout.write(result.format())
    return EXIT_OK if result.equal else EXIT_DIFFERENT


# ------------------------------------------------------------------ demo
def cmd_demo(args: argparse.Namespace) -> int:
    """Train the digits CNN (or take a zoo model), quantize it, print the table, write the report."""
    from .demo import DemoOptions, run_demo

    report = None if args.no_report else Path(args.report_dir)
    run_demo(DemoOptions(model=args.model, mode=args.mode, backend=args.backend,
                         report_dir=report, seed=args.seed))
    return EXIT_OK


def _add_demo_parser(sub) -> None:
    from .demo.run import MODELS, MODES

    demo = sub.add_parser(
        "demo", help="train a small CNN on digits, quantize it, compare, write an HTML report",
        description="Train the digits CNN on scikit-learn's 8x8 digits (a few seconds), quantize it "
                    "through prepare -> calibrate -> convert, print accuracy, size, latency, SQNR "
                    "and time per stage, and write a self-contained HTML report.")
    demo.add_argument("--model", choices=MODELS, default="digits",
                      help="digits (trained here) or a zoo model on random inputs (default: digits)")
    demo.add_argument("--mode", choices=MODES, default="static", help="quantization mode (default: static)")
    demo.add_argument("--backend", choices=("x86", "fbgemm", "qnnpack", "onednn"), default="x86",
                      help="quantized kernels to lower to (default: x86)")
    demo.add_argument("--report-dir", default="purequant-report", metavar="DIR",
                      help="folder of the HTML report (default: ./purequant-report)")
    demo.add_argument("--no-report", action="store_true", help="print the table only")
    demo.add_argument("--seed", type=int, default=0, help="seed of the digits split, weights and shuffling")
    demo.set_defaults(handler=cmd_demo)


# ------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="purequant", description="Quantize PyTorch models through pure functions over immutable graphs.",
        epilog="examples:\n  purequant quantize zoo:digits --calibrate random --out digits.pq\n"
        "  purequant show digits.pq\n  purequant explain digits.pq features_0_0\n"
        "  purequant show resnet18\n  purequant replay dump/001_eliminate_dead_code",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"purequant {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_quantize(sub)
    show = sub.add_parser("show", help="print a model's graph in the text format",
                          description="Trace a zoo model, or read a saved model (.pq) or graph (.graph), "
                          "and print its graph.")
    show.add_argument("model", metavar="MODEL",
                      help="zoo model name (resnet18, mlp, ...) or path to a .pq or .graph file")
    show.add_argument("--no-meta", action="store_true", help="leave out provenance comments")
    show.set_defaults(handler=cmd_show)
    _add_explain(sub)

    rep = sub.add_parser("replay", help="re-run one dumped stage and diff it",
                         description="Re-run one stage folder of a dump; exit 0 if equal, 1 if different.")
    rep.add_argument("dir", metavar="DIR", help="a stage folder such as dump/001_eliminate_dead_code")
    rep.add_argument("--trust", action="append", default=[], metavar="PREFIX",
                     help="also import stage functions and records from this package prefix (repeatable)")
    rep.set_defaults(handler=cmd_replay)
    _add_demo_parser(sub)
    return parser


def _add_quantize(sub: Any) -> None:
    q = sub.add_parser(
        "quantize", help="quantize a model and save it (.pq)", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build a model with FACTORY(), quantize it, save it to OUT and print a summary.",
        epilog="examples:\n  purequant quantize zoo:digits --calibrate random --out digits.pq\n"
        "  purequant quantize mymodels.py:build --example-shape 1,3,32,32 --calibrate random --out m.pq\n"
        "  purequant quantize mypkg.models:tiny_bert --example-shape 1,64 --example-dtype long \\\n"
        "      --int-high 30522 --calibrate batches.pt --out bert.pq\n"
        "  purequant quantize zoo:mlp --mode dynamic --out mlp_dynamic.pq")
    q.add_argument("model", metavar="MODEL", help="MODULE:FACTORY (dotted module or .py path) or zoo:NAME")
    q.add_argument("--out", required=True, metavar="OUT", help="the file to write (conventionally .pq)")
    q.add_argument("--mode", choices=("static", "dynamic", "fp16"), default="static",
                   help="static (calibrated int8), dynamic (int8 weights) or fp16 (default: static)")
    q.add_argument("--calibrate", metavar="random|FILE",
                   help="seeded random inputs of the example shape, or a .pt file: a tensor whose first "
                   "dimension counts batches, or a list of tensors (static mode)")
    q.add_argument("--batches", type=int, metavar="N", help="calibration batches (default: 8 random, or all of FILE)")
    q.add_argument("--example-shape", type=_shape, metavar="SHAPE", help="input shape, e.g. 1,3,224,224")
    q.add_argument("--example-dtype", choices=sorted(_DTYPES), default="float", help="input dtype (default: float)")
    q.add_argument("--int-high", type=int, default=2, metavar="N",
                   help="random integer inputs are drawn from [0, N) (default: 2)")
    q.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    q.add_argument("--backend", choices=("x86", "fbgemm", "qnnpack", "onednn"), default="x86",
                   help="quantized backend (default: x86)")
    q.add_argument("--reference", action="store_true", help="quantize/dequantize around float ops (static mode)")
    q.add_argument("--dump", metavar="DIR", help="write every stage to DIR (replay one with `purequant replay`)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(handler=cmd_quantize)


def _add_explain(sub: Any) -> None:
    ex = sub.add_parser("explain", help="why a node of a saved model was or was not quantized",
                        description="Print a node's decision log (qconfig, fusion, match, observers) as "
                        "stored in a saved model; the original model is not needed.")
    ex.add_argument("model", metavar="MODEL", help="a .pq file written by `purequant quantize` or purequant.save")
    ex.add_argument("node", metavar="NODE", help="a node id, as printed by `purequant show MODEL`")
    ex.set_defaults(handler=cmd_explain)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]); return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            # torch warns that quantized tensors are deprecated each time one is created or
            # loaded; it says nothing about the user's model, so the command line keeps it quiet.
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            return args.handler(args)
    except Exception as e:
        if args.debug:
            raise
        _report(e)
        return EXIT_ERROR


def _report(e: Exception) -> None:
    if isinstance(e, PurequantError):
        message = e.message.splitlines()[0] if e.message else type(e).__name__
        hint = e.hint or "run with --debug to see the details"
    else:
        message, hint = f"{type(e).__name__}: {_first_line(e)}", "run with --debug to see the traceback"
    where = f"[{e.stage}] " if isinstance(e, PurequantError) and e.stage else ""
    print(f"error: {where}{message}\n  hint: {hint}", file=sys.stderr)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


if __name__ == "__main__":
    sys.exit(main())

"""The `purequant` command line: one small function per subcommand.

    purequant show resnet18            trace a zoo model and print its graph (text format)
    purequant show model.graph         print a saved graph
    purequant replay dump/001_fuse     re-run one dumped stage; exit 0 if equal, 1 if not

Errors print as one line plus a hint and exit with code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import ConfigError, PurequantError
from .ir import Graph, parse_graph, print_graph

EXIT_OK, EXIT_DIFFERENT, EXIT_ERROR = 0, 1, 2


# ------------------------------------------------------------------ show
def _graph_file(path: Path) -> Graph:
    return parse_graph(path.read_text())


# Saved artifacts `show` can read, by file suffix; add loaders here as formats appear. Golden
# tests' .before/.after files are in the text format too.
ARTIFACT_LOADERS: dict[str, Callable[[Path], Graph]] = {
    ".graph": _graph_file, ".before": _graph_file, ".after": _graph_file,
}


def load_graph(source: str) -> Graph:
    """The graph named by `source`: a path to a saved artifact, else a zoo model name."""
    path = Path(source)
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


# ------------------------------------------------------------------ replay
def cmd_replay(args: argparse.Namespace) -> int:
    """Re-run one dumped stage and print how its output differs from the dump."""
    from .pipeline.replay import replay

    result = replay(args.dir, trust=tuple(args.trust))
    sys.stdout.write(result.format())
    return EXIT_OK if result.equal else EXIT_DIFFERENT


# ------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="purequant", description="Quantize PyTorch models through pure functions over immutable graphs.",
        epilog="examples:\n  purequant show resnet18\n  purequant replay dump/001_eliminate_dead_code",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"purequant {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = sub.add_parser("show", help="print a model's graph in the text format",
                          description="Trace a zoo model (or read a saved .graph) and print its graph.")
    show.add_argument("model", metavar="MODEL", help="zoo model name (resnet18, mlp, ...) or path to a .graph file")
    show.add_argument("--no-meta", action="store_true", help="leave out provenance comments")
    show.set_defaults(handler=cmd_show)

    rep = sub.add_parser("replay", help="re-run one dumped stage and diff it",
                         description="Re-run one stage folder of a dump; exit 0 if equal, 1 if different.")
    rep.add_argument("dir", metavar="DIR", help="a stage folder such as dump/001_eliminate_dead_code")
    rep.add_argument("--trust", action="append", default=[], metavar="PREFIX",
                     help="also import stage functions and records from this package prefix (repeatable)")
    rep.set_defaults(handler=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]); return the exit code."""
    args = build_parser().parse_args(argv)
    try:
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
        message, hint = f"{type(e).__name__}: {e}", "run with --debug to see the traceback"
    where = f"[{e.stage}] " if isinstance(e, PurequantError) and e.stage else ""
    print(f"error: {where}{message}\n  hint: {hint}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

"""Replay: re-run one dumped stage from disk and diff its output against the dump.

Like tinygrad's process replay: after changing a stage, replay the dumps of an earlier run and
see exactly which graphs, records and params changed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from attrs import frozen

from ..ir import print_graph
from .codec import to_plain
from .dump import DumpedStage, load_stage
from .instruments import CheckWellFormed
from .runner import run_stage
from .tensors import tensor_digest


@frozen
class ReplayResult:
    """How a replayed stage's output differs from its dump.

    Attributes:
        equal: output graph text, record, params and modules all equal the dump's.
        graph_diff: unified diff of the output graphs' text ("" when equal).
        record_diff: JSON paths (`$.removed[2]`) where the records' plain data differ.
        params_diff: param paths added, removed or with other content.
        modules_diff: module targets added, removed or with another spec.
    """

    equal: bool
    graph_diff: str
    record_diff: tuple[str, ...] = ()
    params_diff: tuple[str, ...] = ()
    modules_diff: tuple[str, ...] = ()

    def format(self) -> str:
        """A human-readable report, one section per kind of difference."""
        if self.equal:
            return "equal: the replayed stage reproduces the dump\n"
        parts = ["different:"]
        if self.graph_diff:
            parts.append(self.graph_diff.rstrip("\n"))
        for title, paths in (("record", self.record_diff), ("params", self.params_diff),
                             ("modules", self.modules_diff)):
            if paths:
                parts.append(f"{title} differs at: " + ", ".join(paths))
        return "\n".join(parts) + "\n"


def replay(stage_dir: Path | str, *, trust: tuple[str, ...] = ()) -> ReplayResult:
    """Re-run the stage dumped in `stage_dir` on its dumped inputs and diff the result.

    Args:
        stage_dir: a folder such as `dump/001_eliminate_dead_code`, written by `Dump`.
        trust: package prefixes (`"mypkg."`) the stage function and record classes may be
            imported from, besides purequant.

    Returns:
        The ReplayResult. Errors the stage raises propagate, with their stage notes, so a dump
        of a failed stage reproduces the failure.
    """
    dumped = load_stage(stage_dir, trust=trust)
    out, rec = run_stage(dumped.ctx, dumped.state, (CheckWellFormed(),))
    text = print_graph(out.graph)
    graph_diff = _text_diff(dumped.output, text, Path(stage_dir).name)
    record_diff = tuple(json_diff(dumped.record, to_plain(rec.record))) if dumped.output is not None else ()
    params_diff = _dict_diff(dumped.params_out, _digests(dumped, out.params))
    modules_diff = _dict_diff(dumped.modules_out, {k: to_plain(v) for k, v in out.modules.items()})
    equal = not (graph_diff or record_diff or params_diff or modules_diff)
    return ReplayResult(equal, graph_diff, record_diff, params_diff, modules_diff)


def _text_diff(dumped: str | None, replayed: str, name: str) -> str:
    if dumped == replayed:
        return ""
    if dumped is None:
        dumped = ""  # the stage failed when dumped; everything replayed is new
    lines = difflib.unified_diff(dumped.splitlines(keepends=True), replayed.splitlines(keepends=True),
                                 f"{name}/output.graph (dumped)", f"{name}/output.graph (replayed)")
    return "".join(lines)


def _digests(dumped: DumpedStage, params: Any) -> dict[str, str]:
    # Tensors the stage passed through unchanged were verified on load; hash only new ones.
    known = {id(dumped.state.params[p]): d for p, d in dumped.params_in.items()}
    return {p: known.get(id(t)) or tensor_digest(t) for p, t in params.items()}


def _dict_diff(a: dict, b: dict) -> tuple[str, ...]:
    return tuple(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))


def json_diff(a: Any, b: Any, path: str = "$") -> list[str]:
    """JSON paths where two plain-data values differ, in order. Tag keys (`$tuple`, `$map`)
    are left out of paths, so a record's field `removed` at index 2 is `$.removed[2]`.
    """
    if type(a) is not type(b):
        return [path]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            sub = path if k.startswith("$") and k != "$type" else f"{path}.{k}"
            if k not in a or k not in b:
                out.append(sub if sub != path else f"{path}.{k}")
            else:
                out += json_diff(a[k], b[k], sub)
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [path]
        return [p for k, (x, y) in enumerate(zip(a, b)) for p in json_diff(x, y, f"{path}[{k}]")]
    return [] if a == b else [path]


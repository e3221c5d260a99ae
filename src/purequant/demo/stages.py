"""Each stage's graph before and after, and what changed, for the report.

A run's StageRecords carry the digests of each stage's input and output graphs, not the graphs.
The graphs come from a pool keyed by digest: the graphs the run's values keep (traced, observed,
lowered, folded) and, for the prepare stages, the text `Dump` wrote (`prepare(dump_dir=...)`).
A graph found nowhere in the pool is reported as not kept, never recomputed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
from attrs import frozen

from ..ir import Graph, digest, print_graph
from ..pipeline.runner import StageRecord

_LINE = re.compile(r"%(\w+) = ")


@frozen
class StageView:
    """One stage as the report shows it.

    Attributes:
        index: position in the whole run (prepare's stages, then convert's).
        name: the stage's name.
        phase: "prepare" or "convert", the call that ran it.
        seconds: the stage's time from its record.
        before, after: the graph text in and out (None when no value of the run kept it).
        changed: whether the output graph differs from the input (by digest).
        added, removed: node lines only in the output / only in the input.
        modified: (old line, new line) of nodes whose line changed.
        summary: one line about the stage's record (sizes of its fields).
        record: the stage record's `repr`, for the curious.
    """

    index: int
    name: str
    phase: str
    seconds: float
    before: str | None
    after: str | None
    changed: bool
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    modified: tuple[tuple[str, str], ...] = ()
    summary: str = ""
    record: str = ""


def graph_pool(graphs: Iterable[Graph], dump_dir: Path | None,
               prepare_records: Iterable[StageRecord]) -> dict[str, str]:
    """digest -> graph text, from kept graphs and the prepare dump (stage folder per record)."""
    pool = {digest(g, canonical=False): print_graph(g) for g in graphs}
    if dump_dir is not None:
        for rec in prepare_records:
            folder = dump_dir / f"{rec.index:03d}_{rec.name}"
            for name, key in (("input.graph", rec.input_digest), ("output.graph", rec.output_digest)):
                if (folder / name).is_file():
                    pool.setdefault(key, (folder / name).read_text())
    return pool


def stage_views(records: Iterable[StageRecord], pool: dict[str, str],
                n_prepare: int) -> tuple[StageView, ...]:
    """A StageView per record, in run order; the first `n_prepare` ran in `prepare`.

    Indices count across prepare and convert (each call's runner counts from 0).
    """
    views = []
    for i, rec in enumerate(records):
        before, after = pool.get(rec.input_digest), pool.get(rec.output_digest)
        phase = "prepare" if i < n_prepare else "convert"
        view = StageView(i, rec.name, phase, rec.seconds, before, after,
                         rec.input_digest != rec.output_digest,
                         summary=record_summary(rec.record), record=repr(rec.record))
        if view.changed and before is not None and after is not None:
            view = attrs.evolve(view, **line_diff(before, after))
        views.append(view)
    return tuple(views)


def node_lines(text: str) -> dict[str, str]:
    """node id -> its line, for every node line of a graph text."""
    out = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out[m.group(1)] = line
    return out


def line_diff(before: str, after: str) -> dict[str, tuple]:
    """Nodes added, removed and modified between two graph texts (matched by node id)."""
    old, new = node_lines(before), node_lines(after)
    return {
        "added": tuple(line for nid, line in new.items() if nid not in old),
        "removed": tuple(line for nid, line in old.items() if nid not in new),
        "modified": tuple((old[nid], line) for nid, line in new.items()
                          if nid in old and old[nid] != line),
    }


def record_summary(record: Any) -> str:
    """`RecordName: field n, field n, ...` with the size of each collection field."""
    if not attrs.has(type(record)):
        return type(record).__name__
    parts = []
    for f in attrs.fields(type(record)):
        value = getattr(record, f.name)
        if isinstance(value, (str, int, float, bool)) or value is None:
            parts.append(f"{f.name}={value}")
        elif hasattr(value, "__len__"):
            parts.append(f"{f.name} {len(value)}")
    return f"{type(record).__name__}: " + ", ".join(parts)

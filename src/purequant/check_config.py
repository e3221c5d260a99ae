"""`check_config`: what a backend will do with each qconfig entry, before anything runs.

torch.ao drops qconfig entries silently when no op matches them or when the backend has no
kernel for their dtypes. This reads the records of the pure prepare stages (qconfig map and
matches) and reports, per entry: the nodes it decided, and every reason it is ignored.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from attrs import frozen

from .api import prepare


@frozen
class EntryReport:
    """One qconfig entry and what became of it.

    Attributes:
        level: global, object_type, module_name_regex, module_name or
            module_name_object_type_order.
        key: the entry's key ("" for global).
        decided: ids of the nodes whose qconfig this entry decided.
        quantized: those of them a pattern matched with this qconfig.
        ignored: (node id, reason) for decided nodes left float, and one ("", reason) when the
            entry decided nothing (shadowed by a more specific entry, or matches no op).
    """

    level: str
    key: Any
    decided: tuple[str, ...]
    quantized: tuple[str, ...]
    ignored: tuple[tuple[str, str], ...]

    @property
    def fully_ignored(self) -> bool:
        return not self.quantized


@frozen
class ConfigReport:
    """Every entry's report, in the spec's order; `str()` prints them for humans."""

    backend: str
    entries: tuple[EntryReport, ...]

    def ignored(self) -> tuple[EntryReport, ...]:
        """Entries the backend ignores in part or in whole."""
        return tuple(e for e in self.entries if e.ignored)

    def __str__(self) -> str:
        lines = [f"qconfig check for backend {self.backend}:"]
        for e in self.entries:
            head = f"  {e.level} {e.key!r}: decides {len(e.decided)} node(s), quantizes {len(e.quantized)}"
            lines.append(head)
            lines += [f"    ignored{' at %' + nid if nid else ''}: {why}" for nid, why in e.ignored]
        return "\n".join(lines)


def check_config(model: torch.nn.Module, qconfig: Any, example_inputs: Any, *, backend: str = "x86") -> ConfigReport:
    """Report every qconfig entry the backend will ignore, and why.

    Runs only the pure prepare stages (trace, fuse, qconfig map, matching; no data goes
    through the model) and reads their records. The model is not changed. O(prepare).
    """
    p = prepare(model, qconfig, example_inputs, backend=backend)
    qmap, matches = p.records["generate_qconfig_map"], p.records["find_matches"]
    decided: dict[tuple[str, Any], list[str]] = defaultdict(list)
    for nid, d in qmap.decisions.items():
        if d.level != "none":
            decided[(d.level, _key(d.entry))].append(nid)
    order = {nid: i for i, nid in enumerate(p.graph.ids())}
    reports = []
    for level, key, qc in p.qconfig.entries():
        nids = sorted(decided.get((level, _key(key)), ()), key=lambda n: order.get(n, -1))
        reports.append(_entry_report(level, key, qc, nids, matches))
    return ConfigReport(backend, tuple(reports))


def _entry_report(level: str, key: Any, qc: Any, nids: list[str], matches: Any) -> EntryReport:
    quantized = tuple(n for n in nids if n in matches.matches and matches.matches[n].qconfig is not None)
    # A None entry leaving its nodes float does what it says; only a no-op entry is ignored.
    skipped = [] if qc is None else [(n, matches.skipped[n]) for n in nids if n in matches.skipped and n not in quantized]
    ignored = skipped
    if not nids:
        ignored.append(("", "decides no node: it matches no op, or a more specific entry wins everywhere it matches"))
    elif not quantized and qc is not None and not ignored:
        ignored.append(("", "its nodes match no quantization pattern of this backend: they stay float"))
    return EntryReport(level, key, tuple(nids), quantized, tuple(ignored))


def _key(entry: Any) -> Any:
    return tuple(entry) if isinstance(entry, list) else entry

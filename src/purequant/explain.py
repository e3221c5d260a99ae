"""`Prepared.explain(node)`: why a node was or was not quantized, from the stage records."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .ir import format_node


def explain_node(prepared: Any, nid: str) -> str:
    """The decision log of one node, as text: each stage's say about it, in pipeline order.

    Reads only records (the qconfig decision, fusion, match or skip reason, observers), so
    what it prints is exactly what the stages decided. O(records about the node).
    """
    graph, traced, records = prepared.graph, prepared.traced.graph, prepared.records
    node = graph.get(nid) or traced.get(nid)
    if node is None:
        raise ConfigError(
            f"no node %{nid} in this model", hint="node ids are printed by `purequant show`"
        )
    lines = [format_node(node)]
    insertion = records.get("insert_observers")
    slot = insertion.slots.get(nid) if insertion is not None else None
    if slot is not None:  # an observer node: say what it observes, nothing else applies
        spec = slot.spec
        lines.append(f"observer of %{slot.value_id} ({slot.role}): {spec.kind} {spec.dtype} {spec.qscheme}, inserted by insert_observers")
        return "\n".join(lines)
    lines += _fusion(records.get("fuse"), nid)
    if nid not in graph:
        lines.append("removed by fuse: it no longer exists in the observed graph, so nothing else applies to it")
        return "\n".join(lines)
    qmap = records.get("generate_qconfig_map")
    if qmap is not None and nid in qmap.decisions:
        lines.append("qconfig: " + qmap.explain(nid).split(": ", 1)[1])
    lines += _match(records.get("find_matches"), nid)
    lines += _observers(insertion, nid)
    lines += _narrowed(records.get("find_quants"), nid)
    return "\n".join(lines)


def _fusion(record: Any, nid: str) -> list[str]:
    if record is None:
        return []
    out = []
    for f in record.fusions:
        if nid in f.nodes:
            role = "root" if nid == f.node else f"folded into %{f.node}"
            out.append(f"fuse: {f.pattern} ({role}) -> {f.module_type}")
    for s in record.skipped:
        if nid in s.nodes:
            out.append(f"fuse: not fused ({s.pattern}): {s.reason}")
    return out


def _match(record: Any, nid: str) -> list[str]:
    if record is None:
        return []
    m = record.matches.get(nid)
    if m is not None:
        part = "root" if m.root == nid else f"part of the match rooted at %{m.root}"
        return [
            f"match: pattern {m.entry!r} ({part}), handler {m.handler}, nodes {', '.join('%' + n for n in m.nodes)}"
        ]
    reason = record.skipped.get(nid)
    if reason is not None:
        return [f"match: none kept: {reason}"]
    return ["match: no pattern covers this node: it stays float"]


def _narrowed(plan: Any, nid: str) -> list[str]:
    """Observers kept at 7 bits for a 16-bit kernel: on the value observed and on its reader."""
    out = []
    for v, (reader, why) in getattr(plan, "narrowed", {}).items():
        if v == nid:
            out.append(f"find_quants: observer kept at 7 bits (reduce_range) for %{reader}: {why}")
        if reader == nid:
            out.append(f"find_quants: its input's observer (%{v}'s) kept at 7 bits (reduce_range): {why}")
    return out


def _observers(record: Any, nid: str) -> list[str]:
    if record is None:
        return []
    out = []
    for oid, slot in record.slots.items():
        if slot.value_id == nid:
            out.append(
                f"observer: %{oid} ({slot.role}, {slot.spec.kind} {slot.spec.dtype} {slot.spec.qscheme})"
            )
    shared = record.shares.get(nid)
    if shared is not None:
        out.append(f"observer: shares %{shared}")
    return sorted(out)

"""Test support for find_matches, find_quants and insert_observers.

Graphs are written in the text format; a call_module node's type is its `type` meta (what the
tracer records, and what matching falls back to), and its qconfig is named by a `qconfig` meta
(`none`, `dynamic`, `fp16`, `qint8`, `weight_only`, `reuse`, default `static`). Records are
printed as short text so goldens read like the graphs they describe.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyrsistent import pmap

from purequant.ir import Graph, ModuleSpec, parse_graph
from purequant.observers.spec import ObserverSpec
from purequant.qconfig import QConfig
from purequant.stages.find_matches import MatchResult
from purequant.stages.find_quants import QuantPlan
from purequant.stages.insert_observers import ObserverInsertion

GOLDENS = Path(__file__).parent / "goldens"
UPDATE = bool(os.environ.get("PUREQUANT_UPDATE_GOLDENS"))

ACT = ObserverSpec("histogram", reduce_range=True)
WEIGHT = ObserverSpec("per_channel_minmax", dtype="qint8", qscheme="per_channel_symmetric")
STATIC = QConfig(ACT, WEIGHT, name="static")
QCONFIGS = {
    "static": STATIC,
    "none": None,
    "dynamic": QConfig(
        ObserverSpec("placeholder", quant_min=0, quant_max=255, is_dynamic=True),
        ObserverSpec("minmax", dtype="qint8", qscheme="per_tensor_symmetric"), name="dynamic",
    ),
    "fp16": QConfig(ObserverSpec("placeholder", dtype="float16"), ObserverSpec("placeholder", dtype="float16"), name="fp16"),
    "qint8": QConfig(ObserverSpec("minmax", dtype="qint8", qscheme="per_tensor_symmetric"), WEIGHT, name="qint8"),
    "weight_only": QConfig(
        ObserverSpec("placeholder", dtype="float32"),
        ObserverSpec("per_channel_minmax", qscheme="per_channel_affine_float_qparams"), name="weight_only",
    ),
    "reuse": QConfig(ObserverSpec("noop", options={"reuse_input": True}), None, name="reuse"),
    "other": QConfig(ObserverSpec("minmax"), WEIGHT, name="other"),
    # qnnpack's xnnpack-compatible symmetric qint8 (scale >= 2**-12, weights in [-127, 127]).
    "qint8_sym": QConfig(
        ObserverSpec("minmax", dtype="qint8", qscheme="per_tensor_symmetric", eps=2.0**-12),
        ObserverSpec("minmax", dtype="qint8", qscheme="per_tensor_symmetric", quant_min=-127, quant_max=127, eps=2.0**-12),
        name="qint8_sym",
    ),
}


def graph_of(text: str) -> Graph:
    return parse_graph(text)


def modules_of(graph: Graph) -> dict[str, ModuleSpec]:
    """A ModuleSpec per call_module target, typed from the node's `type` meta."""
    out = {}
    for n in graph:
        if n.op == "call_module" and "type" in n.meta:
            out[n.target] = ModuleSpec(n.meta["type"], params={"weight": f"{n.target}.weight"})
    return out


def qconfigs_of(graph: Graph, default: str = "static") -> dict:
    """node id -> QConfig from each node's `qconfig` meta; placeholders/outputs/attrs: None."""
    out = {}
    for n in graph:
        calls = n.op.startswith("call_")
        out[n.id] = QCONFIGS[n.meta.get("qconfig", default)] if calls else None
    return out


def format_matches(graph: Graph, result: MatchResult) -> str:
    lines = []
    for m in result.roots(graph):
        parts = [f"%{m.root}: {m.entry}", f"[{' '.join(m.nodes)}]", m.observation.value]
        parts.append("inputs=(" + ", ".join("%" + i for i in m.inputs) + ")")
        if m.weights:
            parts.append("weights=(" + ", ".join("%" + i for i in m.weights) + ")")
        if m.module_weight:
            parts.append(f"module_weight={m.module_weight}")
        if m.shared_inputs:
            parts.append("shares=(" + ", ".join("%" + i for i in m.shared_inputs) + ")")
        if m.is_dynamic:
            parts.append("dynamic")
        lines.append("  ".join(parts))
    for nid in graph.ids():
        if nid in result.skipped:
            lines.append(f"skipped %{nid}: {result.skipped[nid]}")
    return "\n".join(lines) + "\n"


def _spec(s: ObserverSpec) -> str:
    extra = f"(scale={s.option('scale')}, zero_point={s.option('zero_point')})" if s.kind == "fixed" else ""
    return f"{s.kind}{extra}/{s.dtype}"


def format_plan(graph: Graph, plan: QuantPlan) -> str:
    lines = []
    for nid in graph.ids():
        if nid in plan.observe:
            vq = plan.observe[nid]
            w = " (weight)" if vq.is_weight and vq.role != "weight" else ""
            lines.append(f"observe %{nid}: {vq.role}{w} {_spec(vq.spec)} by %{vq.requested_by}")
        if nid in plan.shares:
            lines.append(f"share %{nid} -> %{plan.shares[nid]}")
        if nid in plan.dynamic:
            lines.append(f"dynamic %{nid}: {_spec(plan.dynamic[nid])}")
        if nid in plan.notes:
            lines.append(f"note %{nid}: {plan.notes[nid]}")
    for key in sorted(plan.weights):
        lines.append(f"weight {key}: {_spec(plan.weights[key])}")
    return "\n".join(lines) + "\n"


def format_insertion(rec: ObserverInsertion) -> str:
    lines = [
        f"slot %{o}: %{s.value_id} {s.role}{' (weight)' if s.is_weight and s.role != 'weight' else ''} {_spec(s.spec)}"
        for o, s in sorted(rec.slots.items())
    ]
    lines += [f"share %{v} -> %{o}" for v, o in sorted(rec.shares.items())]
    lines += [f"weight {k}: {_spec(s)}" for k, s in sorted(rec.weights.items())]
    lines += [f"skipped %{v}: {why}" for v, why in sorted(rec.skipped.items())]
    return "\n".join(lines) + "\n"


def golden(stage: str, name: str, text: str) -> None:
    """Compare `text` with goldens/<stage>/<name>; PUREQUANT_UPDATE_GOLDENS=1 rewrites it."""
    path = GOLDENS / stage / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden {path} (PUREQUANT_UPDATE_GOLDENS=1 writes it)"
    assert text == path.read_text(), f"{stage}/{name} differs (PUREQUANT_UPDATE_GOLDENS=1 rewrites)"


def cases(stage: str) -> list[str]:
    return sorted(p.name[: -len(".before")] for p in (GOLDENS / stage).glob("*.before"))


EMPTY = pmap()

"""What the report says about each node: its kind (colour), its label, its decision log.

Two views: the observed graph `prepare` made (observers in place) and the quantized graph
`convert` runs. A node's kind comes from the records only: the matches `find_matches` kept,
the observers `insert_observers` placed, the matches `lower` lowered.
"""

from __future__ import annotations

from attrs import frozen

from ..convert_api import Quantized
from ..ir import Graph, Node, format_node

KINDS = {
    "quantized": "quantized (int8 kernel or int8 data flow)",
    "observer": "observer (records ranges during calibration)",
    "qdq": "quantize / dequantize at a float boundary",
    "float": "float (left unquantized)",
    "io": "graph input / output",
}
_QDQ = ("torch.quantize_per_tensor", "torch.quantize_per_channel", "torch.dequantize",
        "torch.quantize_per_tensor_dynamic")


@frozen
class GraphView:
    """One drawable graph: per node id, a kind, a (title, subtitle) label and an explanation."""

    key: str
    title: str
    graph: Graph
    kinds: dict
    labels: dict
    explain: dict


def observed_view(q: Quantized) -> GraphView:
    """The observed graph, coloured by what became of each node."""
    prepared, lowered = q.prepared, _lowered_roots(q)
    matches = prepared.records["find_matches"].matches
    slots = prepared.records["insert_observers"].slots
    kinds, explain = {}, {}
    for node in prepared.graph:
        match = matches.get(node.id)
        if node.op in ("placeholder", "output"):
            kinds[node.id] = "io"
        elif node.id in slots:
            kinds[node.id] = "observer"
        elif match is not None and match.root in lowered:
            kinds[node.id] = "quantized"
        else:
            kinds[node.id] = "float"
        explain[node.id] = explain_observed(q, node.id)
    labels = {n.id: node_label(n) for n in prepared.graph}
    return GraphView("observed", "observed graph (after prepare)", prepared.graph, kinds, labels, explain)


def quantized_view(q: Quantized) -> GraphView:
    """The graph the quantized module runs (after lowering, weight folding and DCE)."""
    lowered = _lowered_roots(q)
    kinds, explain = {}, {}
    for node in q.folded_graph:
        origin = node.meta.get("lowered_from", node.id)
        if node.op in ("placeholder", "output"):
            kinds[node.id] = "io"
        elif node.target in _QDQ and origin not in lowered:
            kinds[node.id] = "qdq"
        elif origin in lowered or node.target.startswith("torch.ops.quantized."):
            kinds[node.id] = "quantized"
        else:
            kinds[node.id] = "float"
        text = format_node(node)
        if origin in q.prepared.graph:
            text += f"\n\nmade from %{origin} of the observed graph:\n" + explain_observed(q, origin)
        explain[node.id] = text
    labels = {n.id: node_label(n) for n in q.folded_graph}
    return GraphView("quantized", "quantized graph (after convert)", q.folded_graph, kinds, labels, explain)


def explain_observed(q: Quantized, nid: str) -> str:
    """`Prepared.explain(nid)`, plus what `lower` did with the node's match."""
    prepared = q.prepared
    lines = [prepared.explain(nid)]
    slot = prepared.records["insert_observers"].slots.get(nid)
    if slot is not None:
        spec = slot.spec
        lines.append(f"observer of %{slot.value_id} ({slot.role}): {spec.kind} {spec.dtype} {spec.qscheme}")
    match = prepared.records["find_matches"].matches.get(nid)
    if match is not None:
        lines.append(_lowering_line(q, match.root))
    return "\n".join(lines)


def _lowering_line(q: Quantized, root: str) -> str:
    rec = q.records.get("lower")
    if rec is None:
        return "lower: not run"
    for m in rec.lowered:
        if m.root == root:
            ops = ", ".join(op.rsplit(".", 1)[-1] for op in m.ops) or "no kernel of its own (runs on int8 data)"
            return f"lower: lowered by handler {m.handler} -> {ops}"
    reason = rec.skip_reasons().get(root)
    return f"lower: left float: {reason}" if reason else "lower: left float"


def _lowered_roots(q: Quantized) -> frozenset[str]:
    rec = q.records.get("lower")
    return frozenset(m.root for m in rec.lowered) if rec is not None else frozenset()


def node_label(node: Node) -> tuple[str, str]:
    """(title, subtitle) for a box: the id, then what the node does."""
    if node.op == "placeholder":
        return node.id, "input"
    if node.op == "output":
        return node.id, "output"
    if node.op == "get_attr":
        folded = node.meta.get("folded_from")
        return node.id, f"prepacked by {str(folded).rsplit('.', 1)[-1]}" if folded else "constant " + node.target
    if node.op == "call_module":
        kind = str(node.meta.get("type", "")).rsplit(".", 1)[-1]
        return node.id, f"{kind} · {node.target}" if kind else node.target
    return node.id, node.target.rsplit(".", 1)[-1] + ("()" if node.op == "call_method" else "")


def vanished_nodes(q: Quantized) -> tuple[str, ...]:
    """Traced nodes no longer in the observed graph (folded away by fusion)."""
    observed = q.prepared.graph
    return tuple(n.id for n in q.prepared.traced.graph if n.id not in observed)

"""Stage: decide every node's qconfig, with the decision log.

The pure form of 1.7's `Quantizer._generate_qconfig_map`, extended to torch.ao's levels: each
node is resolved against the qconfig spec by the module scope it was traced in (node meta
`scope`, `scope_type`, `type_index`, recorded by the torch.fx boundary), never by looking at a
module object.
"""

from __future__ import annotations

import attrs
from attrs import frozen
from pyrsistent import PMap, pmap

from ..ir import Graph, ModuleSpec, Node
from ..qconfig import (
    Decision,
    QConfig,
    QConfigSpec,
    resolve_function,
    resolve_method,
    resolve_module,
)

_UNQUANTIZABLE = Decision(None, "none", None, "graph inputs and outputs carry no qconfig")


@frozen
class QConfigMap:
    """Every node's qconfig decision.

    Attributes:
        decisions: node id -> Decision (qconfig, level, entry, reason, shadowed levels).
    """

    decisions: PMap

    def qconfig(self, nid: str) -> QConfig | None:
        d = self.decisions.get(nid)
        return None if d is None else d.qconfig

    @property
    def qconfigs(self) -> PMap:
        """node id -> QConfig | None (what matching reads)."""
        return pmap({k: d.qconfig for k, d in self.decisions.items()})

    def explain(self, nid: str) -> str:
        d = self.decisions[nid]
        line = f"%{nid}: {d.level}"
        if d.entry not in (None, ""):
            line += f" entry {d.entry!r}"
        line += f": {d.reason}"
        if d.shadowed:
            line += "; overrode " + ", ".join(f"{lv} {e!r}" for lv, e in d.shadowed)
        return line


def generate_qconfig_map(graph: Graph, modules: PMap, *, qconfig: QConfigSpec) -> QConfigMap:
    """Resolve the qconfig of every node.

    Reads node meta (`scope`, `scope_type`, `type_index`) and, for call_module nodes, the
    module's type from `modules` (path -> ModuleSpec). Precedence, from lowest: global,
    object_type, module_name_regex, module_name, module_name_object_type_order. A call_method
    follows its `self` value, as in 1.7; a get_attr takes its owning module's qconfig.
    Pure; O(n * entries in the spec).

    Returns:
        QConfigMap with a Decision for every node.
    """
    decisions: dict[str, Decision] = {}
    for node in graph.node_list():
        decisions[node.id] = _decide(node, modules, qconfig, decisions)
    return QConfigMap(pmap(decisions))


def _fused_by_first_op(node: Node, spec: QConfigSpec, mtype: str, decision: Decision) -> Decision:
    """A fused module (fuse made `LinearReLU` of Linear + ReLU) takes its first op's object-type
    entry when its own type has none, as torch.ao's `_update_qconfig_for_fusion` does: the
    spec names `torch.nn.Linear`, never `purequant.nn.LinearReLU`. (torch.ao also refuses a
    ReLU with another entry; here the first op decides, as it is what carries the weights.)
    The node's `scope_type` meta keeps the type it was traced as."""
    first = node.meta.get("scope_type")
    if not node.meta.get("fused") or not first or first == mtype or decision.level not in ("global", "none"):
        return decision
    by_first = resolve_module(spec, module_path=node.target, module_type=first,
                              type_order_index=node.meta.get("type_index"))
    if by_first.level in ("global", "none"):
        return decision
    return attrs.evolve(by_first, reason=f"fused {mtype} takes its first op's entry: {by_first.reason}")


def _decide(node: Node, modules: PMap, spec: QConfigSpec, done: dict[str, Decision]) -> Decision:
    op, meta = node.op, node.meta
    if op == "call_module":
        mod: ModuleSpec | None = modules.get(node.target)
        mtype = mod.type if mod is not None else meta.get("type", "")
        decision = resolve_module(
            spec,
            module_path=node.target,
            module_type=mtype,
            type_order_index=meta.get("type_index"),
        )
        return _fused_by_first_op(node, spec, mtype, decision)
    if op == "call_function":
        return resolve_function(
            spec,
            scope_path=meta.get("scope", ""),
            scope_type=meta.get("scope_type", ""),
            function=node.target,
            type_order_index=meta.get("type_index"),
        )
    if op == "call_method":
        self_id = node.args[0].id if node.args and hasattr(node.args[0], "id") else None
        if self_id is not None and self_id in done and done[self_id].level != "none":
            d = done[self_id]
            return Decision(
                d.qconfig,
                d.level,
                d.entry,
                f"method follows its self value %{self_id}: {d.reason}",
                d.shadowed,
            )
        return resolve_method(
            spec,
            scope_path=meta.get("scope", ""),
            scope_type=meta.get("scope_type", ""),
            method=node.target,
        )
    if op == "get_attr":
        owner = node.target.rpartition(".")[0]
        mod = modules.get(owner)
        return resolve_module(spec, module_path=owner, module_type=mod.type if mod else "")
    return _UNQUANTIZABLE

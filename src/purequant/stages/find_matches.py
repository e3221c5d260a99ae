"""Stage: match quantization patterns against the graph (1.7's `_find_matches`, pure).

Walk the nodes from the last to the first; at each node not yet covered, try the table's
candidates for its op, highest priority first; the first that matches structurally, whose
nodes share one qconfig and whose dtype configs accept it, covers all its nodes. Rejections
are recorded with their reasons, never warned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from attrs import frozen
from pyrsistent import PMap, PVector, pmap

from ..ir import Graph, ModuleSpec, Node, Ref, iter_refs, paused_gc
from ..observers.spec import ObserverSpec
from ..patterns import Observation, PatternEntry, PatternTable, match_at

CUSTOM = "custom_module"
# Methods and attributes that read a tensor's metadata: their results carry no tensor.
_INFO_METHODS = frozenset({"size", "dim", "numel", "nelement", "stride", "element_size", "shape"})
_INFO_ATTRS = frozenset({"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad"})


@frozen
class Match:
    """One matched pattern, recorded under every node it covers.

    Attributes:
        root: the node the pattern was matched at: the one producing its output (1.7's root).
        nodes: the covered nodes, in graph order (the root is last).
        entry: the pattern entry's name (`custom_module` for custom module classes).
        qconfig: the qconfig shared by all covered nodes.
        handler: the lowering rule's key.
        anchor: the pattern's input op, the node weights belong to (`conv` in relu <- conv).
        observation: how the output is observed, after counting tensor arguments.
        inputs: activation values read from outside the match, in argument order.
        weights: values in the anchor's weight position to quantize (functional conv/linear).
        module_weight: module path whose parameters are quantized weights, if any.
        is_dynamic: activations are quantized at run time (no activation observers).
        output_spec: the output's observer spec (the fixed spec for FIXED entries), or None.
        shared_inputs: for SHARES_INPUT, the inputs whose observer the output joins.
        observe_inputs: False when inputs are only shared if something else observes them.
    """

    root: str
    nodes: tuple[str, ...]
    entry: str
    qconfig: Any
    handler: str
    anchor: str
    observation: Observation
    inputs: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    module_weight: str | None = None
    is_dynamic: bool = False
    output_spec: ObserverSpec | None = None
    shared_inputs: tuple[str, ...] = ()
    observe_inputs: bool = True


@frozen
class MatchResult:
    """Node id -> Match for every covered node, and node id -> reason for rejected ones."""

    matches: PMap
    skipped: PMap

    def roots(self, graph: Graph) -> tuple[Match, ...]:
        """One Match per pattern, in the graph order of their roots. O(n)."""
        ms = self.matches
        return tuple(ms[i] for i in graph.ids() if i in ms and ms[i].root == i)


def find_matches(
    graph: Graph,
    modules: Mapping[str, ModuleSpec],
    table: PatternTable,
    qconfig_map: Mapping[str, Any],
    *,
    custom_modules: Iterable[str] = (),
) -> MatchResult:
    """Match `table`'s patterns, last node first, highest priority first.

    Reads the graph, the traced ModuleSpecs (`modules`, for call_module types), the table, and
    `qconfig_map` (node id -> QConfig-like object with `.activation`/`.weight`, or None: that
    node stays float). `custom_modules` are qualified class names that match alone, as their
    own handler. Pure; O(n * candidates per op * pattern size).

    Returns:
        A MatchResult: every covered node -> its Match; every node where some pattern matched
        structurally but none was kept -> the reasons.
    """
    with paused_gc():  # allocation-heavy and cycle-free (see insert_observers)
        return _find(graph, modules, table, qconfig_map, frozenset(custom_modules))


def _find(graph: Graph, modules, table: PatternTable, qconfig_map, custom: frozenset[str]) -> MatchResult:
    # Plain dicts for the lookups made several times per node (persistent maps cost ~1 us per
    # lookup in pure Python): the graph's tables, free when a GraphBuilder made the graph.
    view = _View(graph.table("nodes"), graph.table("users_map"), graph.table("pos"))
    ctx = _Ctx(view, _as_dict(modules), _as_dict(qconfig_map), custom, _tensor_free(graph))
    matches: dict[str, Match] = {}
    skipped: dict[str, str] = {}
    for nid in reversed(graph.ids()):
        if nid in matches:
            continue
        found, reasons = _match_node(ctx, table, nid, matches)
        if found is not None:
            matches.update(dict.fromkeys(found.nodes, found))
        elif reasons:
            skipped[nid] = "; ".join(reasons)
    return MatchResult(pmap(matches), pmap(skipped))


@frozen
class _View:
    """The three mappings matching reads from a Graph (match_at accepts any such object)."""

    nodes: Mapping[str, Node]
    users_map: Mapping[str, tuple[str, ...]]
    pos: Mapping[str, int]


def _as_dict(mapping: Mapping) -> dict:
    return mapping if type(mapping) is dict else dict(mapping.items())


@frozen
class _Ctx:
    graph: _View
    modules: Mapping[str, ModuleSpec]
    qconfigs: Mapping[str, Any]
    custom: frozenset[str]
    tensor_free: frozenset[str]
    # (entry name, id(qconfig)) -> (why not, accepted dtype config): most nodes share a few
    # qconfig objects, so each entry checks each qconfig's dtypes once per call.
    verdicts: dict = attrs.field(factory=dict)

    def verdict(self, entry: PatternEntry, qc: Any) -> tuple[str | None, Any]:
        """(why not, _Facts) for an entry and a qconfig, computed once per call."""
        key = (entry.name, id(qc))
        got = self.verdicts.get(key)
        if got is None:
            why = entry.rejection(qc)
            got = self.verdicts[key] = (why, None if why else _facts(entry, qc))
        return got


@frozen
class _Facts:
    """What an accepted (entry, qconfig) pair implies for every match of it."""

    is_dynamic: bool
    output_spec: ObserverSpec | None
    observe_inputs: bool


def _facts(entry: PatternEntry, qc: Any) -> _Facts:
    dc, act = entry.accepted_config(qc), qc.activation
    return _Facts(
        bool(dc is not None and dc.is_dynamic),
        None if act is None else entry.fixed_spec(act) or act,
        # torch.ao's reuse-input qconfig: the op never observes its input itself.
        entry.observe_inputs and not (act is not None and act.option("reuse_input", False)),
    )


def _match_node(ctx: _Ctx, table: PatternTable, nid: str, taken) -> tuple[Match | None, list[str]]:
    """The first acceptable candidate at `nid`, else the reasons candidates were rejected."""
    node = ctx.graph.nodes[nid]
    if node.op == "call_module" and _module_type(ctx, node) in ctx.custom:
        qc = ctx.qconfigs.get(nid)
        if qc is None:
            return None, ["custom module: qconfig is None (left in float)"]
        return _custom_match(ctx, node, qc), []
    reasons: list[str] = []
    for entry in table.candidates(node, ctx.modules):
        hit = match_at(entry.pattern, ctx.graph, ctx.modules, nid)
        if hit is None or any(n in taken for n in hit[0]):
            continue
        if ctx.qconfigs.get(nid) is None:
            # The root stays float, so no pattern rooted here can be kept; its inputs are
            # visited on their own later.
            return None, ["qconfig is None (left in float)"]
        qc, why = _shared_qconfig(ctx, entry, hit[0])
        if why is not None:
            reasons.append(f"{entry.name}: {why}")
            continue
        return _build(ctx, entry, hit[0], hit[1], qc), reasons
    return None, reasons


def _shared_qconfig(ctx: _Ctx, entry: PatternEntry, nodes: tuple[str, ...]) -> tuple[Any, str | None]:
    """The qconfig all `nodes` share and the entry accepts, or (None, why not)."""
    qcs = [ctx.qconfigs.get(n) for n in nodes]
    root_qc = qcs[-1]
    odd = [n for n, q in zip(nodes, qcs) if q is not root_qc and q != root_qc]
    if odd:
        return None, f"qconfig of {', '.join('%' + n for n in odd)} differs from the root's"
    why = ctx.verdict(entry, root_qc)[0]
    return (None, why) if why else (root_qc, None)


def _build(ctx: _Ctx, entry: PatternEntry, nodes: tuple[str, ...], anchor: str, qc: Any) -> Match:
    """A Match for an accepted entry: resolve inputs, weights and the output's observation."""
    anchor_node = ctx.graph.nodes[anchor]
    facts = ctx.verdict(entry, qc)[1]
    observation = _observation(ctx, entry, anchor_node)
    inputs = () if observation is Observation.NONE else _inputs(ctx, entry, nodes, anchor_node)
    weights: tuple[str, ...] = ()
    if entry.weight_arg is not None and entry.quantize_weight and qc.weight is not None:
        weights = tuple(i for i in [_arg_ref(anchor_node, entry.weight_arg)] if i is not None)
    module_weight = anchor_node.target if entry.module_weight and anchor_node.op == "call_module" else None
    shared: tuple[str, ...] = ()
    if observation is Observation.SHARES_INPUT:
        shared = tuple(i for i in _shared_inputs(anchor_node, entry.shares_all_inputs) if i not in ctx.tensor_free)
    return Match(
        nodes[-1], nodes, entry.name, qc, entry.handler, anchor, observation, inputs, weights,
        module_weight, facts.is_dynamic, facts.output_spec, shared, facts.observe_inputs,
    )


def _observation(ctx: _Ctx, entry: PatternEntry, anchor: Node) -> Observation:
    # torch.ao decides add/mul's observation by how many positional args are tensors, and
    # observes nothing around ops whose arguments carry no tensor at all.
    if anchor.id in ctx.tensor_free:
        return Observation.NONE
    if entry.by_tensor_args:
        n = sum(1 for a in anchor.args if type(a) is Ref and a.id not in ctx.tensor_free)
        return Observation(entry.by_tensor_args.get(n, entry.observation))
    return entry.observation


def _inputs(ctx: _Ctx, entry: PatternEntry, nodes: tuple[str, ...], anchor: Node) -> tuple[str, ...]:
    """Tensor values the match reads from outside, minus the anchor's weight and bias."""
    inside, out = set(nodes), dict[str, None]()
    for nid in nodes:
        node = ctx.graph.nodes[nid]
        for ref in _activation_refs(node, entry if node is anchor else None):
            if ref not in inside and ref not in ctx.tensor_free:
                out[ref] = None
    return tuple(out)


def _activation_refs(node: Node, entry: PatternEntry | None) -> list[str]:
    """Refs in `node`'s activation positions; `entry` given for the anchor only."""
    if entry is None:
        return list(node.refs())
    skip_pos = {a[0] for a in (entry.weight_arg, entry.bias_arg) if a is not None}
    skip_kw = {a[1] for a in (entry.weight_arg, entry.bias_arg) if a is not None}
    keep = entry.input_args
    refs = [
        r for i, a in enumerate(node.args)
        if i not in skip_pos and (keep is None or i in keep)
        for r in iter_refs(a)
    ]
    if keep is None:
        refs += [r for k in sorted(node.kwargs) if k not in skip_kw for r in iter_refs(node.kwargs[k])]
    return refs


def _arg_ref(node: Node, arg: tuple[int, str]) -> str | None:
    pos, kw = arg
    value = node.args[pos] if pos < len(node.args) else node.kwargs.get(kw)
    return value.id if type(value) is Ref else None


def _shared_inputs(anchor: Node, all_elements: bool) -> tuple[str, ...]:
    # torch.ao shares with the first argument that is a node or a list of nodes; for cat and
    # stack every element of that list joins too.
    for a in anchor.args:
        if type(a) is Ref:
            return (a.id,)
        refs = tuple(iter_refs(a)) if isinstance(a, (tuple, PVector)) else ()
        if refs:
            return refs if all_elements else refs[:1]
    return ()


def _custom_match(ctx: _Ctx, node: Node, qc: Any) -> Match:
    inputs = tuple(i for i in node.input_ids() if i not in ctx.tensor_free)
    act = qc.activation
    return Match(
        node.id, (node.id,), CUSTOM, qc, CUSTOM, node.id, Observation.OWN_OUTPUT, inputs,
        is_dynamic=bool(act is not None and act.is_dynamic), output_spec=act,
    )


def _module_type(ctx: _Ctx, node: Node) -> str | None:
    spec = ctx.modules.get(node.target)
    return spec.type if spec is not None else node.meta.get("type")


def _tensor_free(graph: Graph) -> frozenset[str]:
    """Values that carry no tensor: metadata reads and ops on them only (torch.ao's
    `all_node_args_have_no_tensors`: a call whose node arguments are all tensor-free). O(n)."""
    free: set[str] = set()
    for node in graph.node_list():
        if node.op not in ("call_function", "call_method"):
            continue
        if node.op == "call_method" and node.target in _INFO_METHODS:
            free.add(node.id)
        elif node.target == "builtins.getattr" and len(node.args) > 1 and node.args[1] in _INFO_ATTRS:
            free.add(node.id)
        elif all(i in free for i in node.input_ids()):
            free.add(node.id)
    return frozenset(free)

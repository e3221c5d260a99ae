"""The `fold_weights` stage: weight chains computed once, kept as constants.

    fold_weights(graph, params) -> (graph, params, FoldRecord)

1.7's `_fold_weight`, without its two failure modes. A lowered graph quantizes and prepacks
its weights with graph nodes (get_attr -> quantize -> prepack). Here every node whose target is
a quantize or prepack op and whose inputs are all constants (get_attr of a params entry, or
nodes folded before it) is evaluated once, in one forward sweep (no recursion). A folded node
that something unfolded still reads becomes a get_attr of a new params entry (`_folded.<name>`)
holding the value: a packed-weights object or a quantized tensor. Folded nodes nothing else
reads disappear, and so do get_attr nodes only they read.

Shared weights: a parameter read both by a folded chain and by an unfolded op (a float
`F.linear` reusing a quantized layer's weight) keeps its get_attr for the unfolded reader; the
chain is folded from the same tensor, which is never modified. 1.7 (and torch.ao 2.13's
convert_fx) index their folding by node names and module attributes, which these cases break.

Prepacking uses the quantized engine current when this runs (the record says which): set it
with `purequant.backends.quantized_engine` in the shell, and run the result under it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from attrs import frozen
from pyrsistent import PMap, PVector, pmap

from ..errors import StageError
from ..ir import Graph, Node, Ref, Sym, paused_gc
from ..ir.names import sanitize
from ..lowering.materialise import resolve_op
from ..qconfig.errors import QualifiedNameError

__all__ = ["FOLDABLE", "Fold", "FoldRecord", "fold_weights"]

_Q, _QD = "torch.ops.quantized.", "torch.ops.quantized_decomposed."
_PREPACK = (
    "conv1d_prepack", "conv2d_prepack", "conv3d_prepack", "conv_transpose1d_prepack",
    "conv_transpose2d_prepack", "conv_transpose3d_prepack", "linear_prepack", "linear_prepack_fp16",
    "embedding_bag_prepack", "embedding_bag_byte_prepack", "embedding_bag_4bit_prepack",
)
# What dynamic LSTM/GRU hold per layer and direction: packed weights and biases in one object.
_CELL_PARAMS = ("make_quantized_cell_params_dynamic", "make_quantized_cell_params_fp16")
# Targets evaluated when their inputs are constants: weight quantization and prepacking.
FOLDABLE = frozenset(
    ("torch.quantize_per_tensor", "torch.quantize_per_channel", _QD + "quantize_per_tensor",
     _QD + "quantize_per_channel") + tuple(_Q + p for p in _PREPACK + _CELL_PARAMS)
)
_PACKING = frozenset(_Q + p for p in _PREPACK + _CELL_PARAMS)  # results bound to the engine
FOLDED = "_folded"


@frozen
class Fold:
    """One value computed once.

    Attributes:
        node: the node that became a get_attr (it keeps its id, so readers are unchanged).
        path: the new params entry holding the value.
        target: the op that produced it (a prepack or quantize op).
        chain: ids of the folded nodes it was computed through, in graph order, itself last.
        sources: params paths it was computed from.
    """

    node: str
    path: str
    target: str
    chain: tuple[str, ...]
    sources: tuple[str, ...]


@frozen
class FoldRecord:
    """What `fold_weights` did.

    Attributes:
        folds: one per new constant, in graph order.
        dropped: ids of nodes removed (folded chain nodes, get_attrs only they read).
        engine: the quantized engine the weights were packed for (None if nothing was packed).
    """

    folds: tuple[Fold, ...] = ()
    dropped: tuple[str, ...] = ()
    engine: str | None = None


def fold_weights(graph: Graph, params: PMap) -> tuple[Graph, PMap, FoldRecord]:
    """Evaluate constant quantize/prepack chains once; they become params entries.

    Reads the graph and `params` (read, never modified; folded values are new entries under
    `_folded.`). Returns the new graph, params and a FoldRecord; with nothing to fold the very
    same graph and params. Pure given the quantized engine; O(n) plus the cost of the folded
    ops (quantizing and packing every weight once).

    Raises:
        StageError: a folded op failed (the message names the node and the engine).
    """
    folded = _foldable(graph, params)
    if not folded:
        return graph, params, FoldRecord()
    users = {nid: graph.users(nid) for nid in folded}
    frontier = [nid for nid in graph.ids() if nid in folded and any(u not in folded for u in users[nid])]
    with paused_gc():
        values, chains = _evaluate(graph, params, folded)
    new_params = params.evolver()
    folds = []
    for nid in frontier:
        node = graph.nodes[nid]
        path = _fresh(new_params, chains[nid][1], "packed" if node.target in _PACKING else "quantized")
        new_params[path] = values[nid]
        folds.append(Fold(nid, path, node.target, chains[nid][0], chains[nid][1]))
    new_graph, dropped = _rebuild(graph, folded, {f.node: f for f in folds})
    packed = any(f.target in _PACKING for f in folds)
    record = FoldRecord(tuple(folds), dropped, torch.backends.quantized.engine if packed else None)
    return new_graph, new_params.persistent(), record


def _is_leaf(node: Node, params: Mapping) -> bool:
    return node.op == "get_attr" and node.target in params


def _foldable(graph: Graph, params: Mapping) -> frozenset[str]:
    """Foldable nodes: FOLDABLE targets whose inputs are leaves or foldable. One forward pass."""
    leaves = {n.id for n in graph.node_list() if _is_leaf(n, params)}
    out: set[str] = set()
    for node in graph.node_list():
        if node.op == "call_function" and node.target in FOLDABLE:
            ins = node.input_ids()
            if ins and all(i in out or i in leaves for i in ins):
                out.add(node.id)
    return frozenset(out)


def _evaluate(graph: Graph, params: Mapping, folded: frozenset[str]) -> tuple[dict, dict]:
    """Values of the folded nodes, and for each its (chain of folded ids, source paths)."""
    values: dict[str, Any] = {}
    chains: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for node in graph.node_list():
        if node.id not in folded:
            continue
        chain: dict[str, None] = {}
        sources: dict[str, None] = {}
        for i in node.input_ids():
            src = graph.nodes[i]
            if i in folded:
                chain.update(dict.fromkeys(chains[i][0]))
                sources.update(dict.fromkeys(chains[i][1]))
            else:
                sources[src.target] = None
        chains[node.id] = (tuple(chain) + (node.id,), tuple(sources))
        values[node.id] = _call(graph, node, values, params)
    return values, chains


def _call(graph: Graph, node: Node, values: dict, params: Mapping) -> Any:
    def arg(v: Any) -> Any:
        t = type(v)
        if t is tuple or isinstance(v, PVector):
            return t(arg(x) for x in v) if t is tuple else [arg(x) for x in v]
        if t is Sym:
            return resolve_op(v.name)
        if t is Ref:
            return values[v.id] if v.id in values else params[graph.nodes[v.id].target]
        return v

    try:
        fn = resolve_op(node.target)
        return fn(*[arg(a) for a in node.args], **{k: arg(v) for k, v in node.kwargs.items()})
    except (RuntimeError, TypeError, ValueError, QualifiedNameError) as e:
        raise StageError(
            f"folding {node.target} failed on engine {torch.backends.quantized.engine!r}: {e}",
            stage="fold_weights", node_id=node.id,
        ) from e


def _rebuild(graph: Graph, folded: frozenset[str], folds: dict[str, Fold]) -> tuple[Graph, tuple[str, ...]]:
    """The graph with frontier nodes as get_attrs, other folded nodes and orphaned leaves gone."""
    gone = {nid for nid in folded if nid not in folds}
    for node in graph.node_list():
        us = graph.users(node.id)
        if node.op == "get_attr" and us and all(u in folded for u in us):
            gone.add(node.id)
    b = graph.builder()
    for node in graph.node_list():
        if node.id in gone:
            continue
        fold = folds.get(node.id)
        if fold is not None:
            node = Node(node.id, "get_attr", fold.path, (), pmap(), node.meta.set("folded_from", node.target))
        b.add(node)
    return b.finish(), tuple(nid for nid in graph.ids() if nid in gone)


def _fresh(params: Any, sources: tuple[str, ...], suffix: str) -> str:
    stem = f"{FOLDED}.{sanitize(sources[0] if sources else 'value')}_{suffix}"
    path, k = stem, 0
    while path in params:
        k += 1
        path = f"{stem}_{k}"
    return path

"""Test support for lower / fold_weights: prepare + calibrate through the API, qparams, runs,
torch.ao baselines, SQNR, and graph scans."""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Iterable

import torch
from attrs import frozen
from pyrsistent import PMap

import purequant.api as api
from purequant.backends import quantized_engine
from purequant.calibration import OBSERVE
from purequant.ir import Graph, GraphBuilder, Node, Ref, print_graph
from purequant.lowering import lowered_module
from purequant.observers import init_stats, observe, qparams
from purequant.stages.fold_weights import fold_weights
from purequant.stages.lower import lower
from purequant.trace import emit_graph_module

warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.ao")
QUANTIZED = "torch.ops.quantized."


def sqnr(ref: torch.Tensor, x: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of `x` against `ref`, in dB (inf when equal)."""
    noise = (ref.float() - x.float()).pow(2).mean()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.float().pow(2).mean() / noise))


def api_qparams(prepared: api.Prepared) -> dict:
    """observer id -> QParams from the API's calibration statistics."""
    return {k: qparams(prepared.stats.specs[k], s) for k, s in prepared.stats.stats.items()}


def torchao_style_qparams(prepared: api.Prepared, batches: Iterable) -> dict:
    """Calibrate as torch.ao does: a value sharing another's observer is observed *too*.

    torch.ao gives a maxpool/flatten output the very observer module of its input, so that
    observer sees both tensors. purequant observes the owner only. Observing the sharers as
    well, in execution order, isolates lowering when comparing with torch.ao.
    """
    ins = prepared.records["insert_observers"]
    graph = _keyed_with_sharers(prepared.graph, ins.shares)
    specs = {oid: s.spec for oid, s in ins.slots.items() if not s.is_weight}
    stats = {oid: init_stats(spec) for oid, spec in specs.items()}

    def collect(value, key):
        if key in specs and isinstance(value, torch.Tensor) and value.is_floating_point():
            stats[key] = observe(specs[key], stats[key], value.detach())
        return value

    gm = emit_graph_module(graph, params=prepared.state.params,
                           module_objects=api.unchanged_objects(prepared.traced, prepared.state.modules),
                           modules=prepared.state.modules, callables={OBSERVE: collect})
    with torch.no_grad():
        for batch in batches:
            gm(*batch)
    return {k: qparams(specs[k], s) for k, s in stats.items()}


def _keyed_with_sharers(graph: Graph, shares: PMap) -> Graph:
    b = GraphBuilder()
    for node in graph.node_list():
        if node.op == "call_function" and node.target == OBSERVE:
            node = Node(node.id, node.op, node.target, node.args, node.kwargs.set("key", node.id), node.meta)
        b.add(node)
        if node.id in shares:
            b.add(Node(b.fresh_id(node.id + "_shared_obs"), "call_function", OBSERVE, (Ref(node.id),),
                       {"key": shares[node.id]}))
    return b.finish()


@frozen(eq=False)
class Lowered:
    graph: Graph
    params: PMap
    modules: PMap
    record: object
    prepared: api.Prepared

    def module(self, fold: bool = True, engine: str | None = "x86") -> torch.fx.GraphModule:
        graph, params = self.graph, self.params
        if fold:
            with quantized_engine(engine):
                graph, params, _ = fold_weights(graph, params)
        return lowered_module(graph, params, self.modules,
                              module_objects=api.unchanged_objects(self.prepared.traced, self.modules))


def lower_prepared(prepared: api.Prepared, qp: dict, target: str = "native", backend: str = "x86") -> Lowered:
    st = prepared.state
    out = lower(st.graph, st.params, st.modules, st.records["find_matches"], st.records["insert_observers"],
                qp, target=target, backend=backend)
    return Lowered(*out, prepared)


def run(gm: torch.nn.Module, inputs: tuple, engine: str | None = "x86"):
    with torch.no_grad(), quantized_engine(engine):
        return gm(*inputs)


def torchao_convert(model: torch.nn.Module, mapping, example: tuple, batches: Iterable,
                    backend_config=None) -> torch.nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    observed = prepare_fx(copy.deepcopy(model), mapping, example, backend_config=backend_config)
    with torch.no_grad():
        for batch in batches:
            observed(*batch)
    return convert_fx(observed, backend_config=backend_config)


def op_counts(graph: Graph, prefix: str = QUANTIZED) -> Counter:
    """call_function targets starting with `prefix`, counted (short names)."""
    return Counter(n.target[len(prefix):] for n in graph.node_list()
                   if n.op == "call_function" and n.target.startswith(prefix))


_Q = {"torch.quantize_per_tensor", "torch.ops.quantized_decomposed.quantize_per_tensor"}
_DQ = {"torch.dequantize", "torch.ops.quantized_decomposed.dequantize_per_tensor"}


def dq_q_pairs(graph: Graph) -> list[str]:
    """Quantize nodes reading a dequantize node with the same qparams (native: any)."""
    out = []
    for node in graph.node_list():
        if node.target not in _Q or type(node.args[0]) is not Ref:
            continue
        src = graph.node(node.args[0].id)
        if src.target in _DQ and (src.target == "torch.dequantize" or src.args[1:] == node.args[1:]):
            out.append(node.id)
    return out


def snapshot(graph: Graph, params: PMap) -> tuple:
    """What purity compares: the graph text and every param (object and a copy of its value)."""
    return print_graph(graph), {k: (v, v.detach().clone()) for k, v in params.items()}


def unchanged(before: tuple, graph: Graph, params: PMap) -> bool:
    text, tensors = before
    if print_graph(graph) != text or set(params) != set(tensors):
        return False
    return all(params[k] is obj and torch.equal(obj, copy_) for k, (obj, copy_) in tensors.items())

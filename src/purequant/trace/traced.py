"""`trace`: a torch model in, a `Traced` value out (an IR graph and the tables the shell needs)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.fx
from attrs import frozen
from pyrsistent import PMap, pmap

from ..errors import TraceError
from ..ir import Graph, paused_gc
from .capture import capture, split_leaves
from .convert import Provenance, graph_from_fx
from .emit import emit_graph_module
from .specs import attr_at, module_spec, params_table, type_name


@frozen(eq=False, repr=False)
class Traced:
    """A traced model: its graph as plain data, plus the tables that tie it back to torch.

    Compared by identity (the tables hold tensors and modules); its repr is a one-line summary.

    Attributes:
        graph: the IR graph (node ids are torch.fx's node names).
        params: every parameter and buffer by full path, plus tensor constants met while
            tracing (`_tensor_constant0`) and other tensor attributes the graph reads. These
            are the user's own tensor objects: never cloned, never mutated.
        modules: call_module target -> ModuleSpec (type, plain hyperparameters, param paths).
        module_objects: the user's module objects, by path: every call_module target (and any
            module a get_attr reads). For the shell only; never mutated.
        callables: call_function target key -> function, for functions with no importable
            name (e.g. a local function wrapped with torch.fx.wrap).
        input_names: the placeholders' targets (the forward's argument names), in order.
        model_type: qualified class name of the traced model.
        training: the model's `training` flag when traced.
    """

    graph: Graph
    params: PMap
    modules: PMap
    module_objects: PMap
    callables: PMap
    input_names: tuple[str, ...]
    model_type: str
    training: bool = False

    def __repr__(self) -> str:
        return (f"<Traced {self.model_type}: {len(self.graph)} nodes, {len(self.params)} tensors, "
                f"{len(self.modules)} modules, inputs {self.input_names}>")


def trace(
    model: torch.nn.Module,
    example_inputs: Any = None,
    *,
    leaf_modules: Iterable[type | str] = (),
    concrete_args: dict[str, Any] | None = None,
) -> Traced:
    """Trace `model` with torch.fx and convert the result to a purequant graph.

    The model is only read: nothing is set on it, nothing is copied, tensors are shared.

    Args:
        model: the module to trace.
        example_inputs: optional positional inputs (a tuple, or one tensor). Not run; only
            checked against the forward's signature, so a mismatch fails here.
        leaf_modules: module classes and/or module paths to keep whole (called, not traced
            into), in addition to torch.fx's defaults (the torch.nn modules).
        concrete_args: fixed values for some forward arguments, as in
            `torch.fx.symbolic_trace` (flat values only).

    Returns:
        A frozen `Traced`. O(nodes + parameters) on top of torch.fx's own tracing.

    Raises:
        TraceError: torch.fx cannot trace the model (the message names the submodule, its
            class, the source line, and how to make it a leaf), or a traced value cannot be
            represented in a graph, or example_inputs do not fit the signature.
    """
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"trace() takes a torch.nn.Module, got {type(model).__name__}")
    leaf_types, leaf_paths = split_leaves(model, leaf_modules)
    fx_graph, tracer = capture(model, leaf_types, leaf_paths, concrete_args)
    traced = from_fx(model, fx_graph, tracer.provenance, tracer.constants, module_at=tracer.module_at,
                     params=tracer.params_table)
    if example_inputs is not None:
        _check_inputs(traced, example_inputs)
    return traced


def from_fx(
    model: torch.nn.Module,
    fx_graph: torch.fx.Graph,
    provenance: Provenance,
    constants: dict[str, torch.Tensor],
    *,
    module_at: Mapping[str, torch.nn.Module] | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
) -> Traced:
    """Build a Traced from a graph torch.fx traced on `model` (reads `model` only).

    `module_at`: path -> module, as the CaptureTracer recorded them (optional): call_module
    targets are looked up there instead of by `get_submodule`, which walks the path with
    checked attribute reads (~14 µs for a path like `features.3.conv.1.0`; 2 ms of a
    MobileNetV2 trace). A target it does not name falls back to `get_submodule`. `params`:
    `params_table(model)` if the caller has it already (the CaptureTracer does); not modified.

    O(nodes + parameters): one pass for the targets, one for the conversion. The cyclic GC is
    paused meanwhile (allocation-heavy, cycle-free work; see `purequant.ir.paused_gc`).
    """
    with paused_gc():
        table = dict(params) if params is not None else params_table(model)
        return _from_fx(model, fx_graph, provenance, constants, module_at or {}, table)


def _from_fx(model: torch.nn.Module, fx_graph: torch.fx.Graph, provenance: Provenance,
             constants: dict[str, torch.Tensor], module_at: Mapping[str, torch.nn.Module],
             params: dict[str, torch.Tensor]) -> Traced:
    root_type = type_name(type(model))
    specs: dict[str, Any] = {}
    objects: dict[str, torch.nn.Module] = {}
    attr_targets: list[str] = []
    interned: dict = {}
    for node in fx_graph.nodes:
        if node.op == "call_module" and node.target not in specs:
            module = module_at.get(node.target)
            objects[node.target] = module = module if module is not None else model.get_submodule(node.target)
            specs[node.target] = module_spec(module, node.target, interned)
        elif node.op == "get_attr":
            attr_targets.append(node.target)
    params.update(constants)
    for path in attr_targets:
        if path not in params and path not in objects:
            _add_attr(model, path, params, objects)
    graph, callables = graph_from_fx(
        fx_graph, provenance, root_type, {path: spec.type for path, spec in specs.items()}
    )
    input_names = tuple(n.target for n in fx_graph.nodes if n.op == "placeholder")
    return Traced(graph, pmap(params), pmap(specs), pmap(objects), pmap(callables),
                  input_names, root_type, model.training)


def _add_attr(model: torch.nn.Module, path: str, params: dict, objects: dict) -> None:
    obj = attr_at(model, path)
    if isinstance(obj, torch.Tensor):
        params[path] = obj
    elif isinstance(obj, torch.nn.Module):
        objects[path] = obj
    else:
        raise TraceError(
            f"the graph reads attribute {path!r}, a {type(obj).__name__}; only tensors and "
            "modules can be graph attributes"
        )


def _check_inputs(traced: Traced, example_inputs: Any) -> None:
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    placeholders = traced.graph.placeholders()
    if any(p.target.startswith("*") for p in placeholders):
        return
    required = sum(1 for p in placeholders if not p.args)
    if not required <= len(inputs) <= len(placeholders):
        raise TraceError(
            f"example_inputs has {len(inputs)} values but {traced.model_type}.forward takes "
            f"{required}" + (f" to {len(placeholders)}" if required != len(placeholders) else "")
            + f" ({', '.join(traced.input_names)})"
        )


def to_graph_module(traced: Traced) -> torch.fx.GraphModule:
    """Materialise a Traced as a torch.fx GraphModule sharing the user's modules and tensors.

    The GraphModule's outputs are bit-identical to the traced model's. It holds the user's own
    module objects and tensors (no copies), so calling `.train()`/`.eval()`/`.to()` on it
    affects the user's model too. O(nodes) plus torch.fx's code generation.
    """
    return emit_graph_module(
        traced.graph,
        params=traced.params,
        module_objects=traced.module_objects,
        modules=traced.modules,
        callables=traced.callables,
        class_name=traced.model_type.rsplit(".", 1)[-1],
        training=traced.training,
    )

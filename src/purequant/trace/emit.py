"""IR Graph -> torch.fx GraphModule: the materialiser every stage ends with.

One pass creates the fx nodes with `Graph.create_node(name=node id)`, resolving call_function
targets (through `callables` first, then by qualified name) and Syms. The GraphModule is made
empty, the objects its get_attr/call_module targets read are installed by path, and the graph
is assigned once, so fx generates and compiles the code exactly once.

Why not `GraphModule(root_dict, graph)`: fx installs dict entries with `setattr` along the
path, so a target under a user's module (`fc.weight` next to `fc`) would be set on the user's
module (re-registering a non-persistent buffer as persistent, for one). `_install` builds its
own container modules instead and only verifies paths that run through a user's module.

Node names equal the IR ids, except an id that is a Python builtin or keyword, which fx refuses
as a variable name (`sum`, `input`): that one gets the first free `sum_1`, `sum_2`, ... that no
other id uses, so every other node keeps its id as its name.
"""

from __future__ import annotations

import builtins
import importlib
import keyword
from collections.abc import Mapping
from typing import Any

import torch
import torch.fx
from pyrsistent import pmap

from ..errors import PurequantError, TraceError
from ..ir import Graph, ModuleSpec, Node, paused_gc
from ..nn.build import build_module
from ..nn.fused import FUSED_TYPES
from ..qconfig.errors import QualifiedNameError
from ..qconfig.names import resolve_qualified_name
from .instantiate import module_from_spec
from .values import to_fx

_EMPTY = pmap()


def emit_graph_module(
    graph: Graph,
    *,
    params: Mapping[str, torch.Tensor],
    module_objects: Mapping[str, torch.nn.Module],
    modules: Mapping[str, ModuleSpec] | None = None,
    callables: Mapping[str, Any] | None = None,
    class_name: str = "PurequantModule",
    training: bool = False,
) -> torch.fx.GraphModule:
    """Build a torch.fx GraphModule that runs `graph`.

    Args:
        graph: a well-formed IR graph.
        params: path -> tensor, for get_attr targets (and the params ModuleSpecs name).
        module_objects: path -> module object; used as is for call_module targets (and for
            get_attr targets that are modules).
        modules: path -> ModuleSpec, for call_module targets without a module object: those
            are built from the spec and `params`: `purequant.nn.build_module` for purequant's
            fused types, `instantiate.module_from_spec` (through the constructor) otherwise.
        callables: call_function target -> function, consulted before resolving the target
            as a qualified name.
        class_name: the GraphModule's class name.
        training: the GraphModule's own `training` flag.

    Returns:
        The GraphModule. It shares the given tensors and module objects (nothing is copied).
        O(nodes + targets * path depth) plus torch.fx's code generation.

    Raises:
        TraceError: a target cannot be resolved or installed (the message names the node).
    """
    with paused_gc():  # allocation-heavy and cycle-free, see purequant.ir.paused_gc
        return _emit(graph, params, module_objects, modules or _EMPTY, callables or _EMPTY,
                     class_name, training)


def _emit(graph: Graph, params: Mapping, module_objects: Mapping, modules: Mapping,
          callables: Mapping, class_name: str, training: bool) -> torch.fx.GraphModule:
    fx_graph = torch.fx.Graph()
    env: dict[str, torch.fx.Node] = {}
    objects: dict[str, Any] = {}
    functions = _Functions(callables)
    lookup = _Objects(params, module_objects, modules)
    create = fx_graph.create_node
    names = _fx_names(graph.ids())
    for node in graph.node_list():
        op, target = node.op, node.target
        if op == "call_function":
            target = functions(node)
        elif (op == "call_module" or op == "get_attr") and target not in objects:
            objects[target] = lookup(node)
        # Created bare, then given its arguments through the public setters: create_node would
        # first walk every argument with pytree looking for SymInts (which plain IR values
        # never hold), doubling its cost.
        fx_node = env[node.id] = create(op, target, (), None, names.get(node.id, node.id))
        if node.kwargs:
            fx_node.kwargs = {k: to_fx(v, env) for k, v in node.kwargs.items()}
        if node.args:
            fx_node.args = tuple([to_fx(a, env) for a in node.args])
    gm = torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph(), class_name)
    _install_all(gm, objects)
    gm.training = training
    gm.graph = fx_graph  # generates and compiles forward, once
    return gm


# torch.ops namespaces that exist only once a module registering them is imported (lowered
# reference graphs call torch.ops.quantized_decomposed.*, which `import torch` does not load).
_OP_LIBRARIES = {"torch.ops.quantized_decomposed.": "torch.ao.quantization.fx._decomposed"}


def _load_op_library(target: str) -> None:
    for prefix, module in _OP_LIBRARIES.items():
        if target.startswith(prefix):
            importlib.import_module(module)


def _fx_names(ids: tuple[str, ...]) -> dict[str, str]:
    """fx names for the ids fx would refuse (builtins, keywords); every other id is its name.

    Picked here, among names no id uses, so that fx's own renaming (`sum` -> `sum_1`) cannot
    push a later `sum_1` on to `sum_2`. O(n) set lookups.
    """
    bad = [nid for nid in ids if nid in _RESERVED]
    if not bad:
        return {}
    taken = set(ids) | _RESERVED
    names = {}
    for nid in bad:
        k = 1
        while f"{nid}_{k}" in taken:
            k += 1
        names[nid] = f"{nid}_{k}"
        taken.add(names[nid])
    return names


# Names fx will not give a node (it renames them): keywords, builtins, its own globals.
_RESERVED = frozenset(keyword.kwlist) | frozenset(builtins.__dict__) | frozenset(
    getattr(torch.fx.graph, "_custom_builtins", ()))


class _Functions:
    """call_function target string -> function (callables table first), cached per target."""

    def __init__(self, callables: Mapping[str, Any]) -> None:
        self.callables = callables
        self.cache: dict[str, Any] = {}

    def __call__(self, node: Node) -> Any:
        fn = self.cache.get(node.target)
        if fn is None:
            fn = self.callables.get(node.target)
            if fn is None:
                _load_op_library(node.target)
                try:
                    fn = resolve_qualified_name(node.target)
                except QualifiedNameError as e:
                    raise TraceError(
                        f"cannot resolve the target of %{node.id}: {e.message}",
                        node_id=node.id,
                        hint="pass the function in callables={target: fn}",
                    ) from None
            self.cache[node.target] = fn
        return fn


class _Objects:
    """The object a get_attr or call_module target reads: a tensor, a module, or a new module."""

    def __init__(self, params: Mapping, module_objects: Mapping, modules: Mapping) -> None:
        self.params, self.module_objects, self.modules = params, module_objects, modules

    def __call__(self, node: Node) -> Any:
        target = node.target
        if node.op == "get_attr":
            obj = self.params.get(target)
            if obj is None:
                obj = self.module_objects.get(target)
            if obj is None:
                raise TraceError(f"%{node.id} reads {target!r}, which is not in params",
                                 node_id=node.id)
            return obj
        obj = self.module_objects.get(target)
        if obj is not None:
            return obj
        spec = self.modules.get(target)
        if spec is None:
            raise TraceError(
                f"%{node.id} calls module {target!r}, which has neither a module object nor a "
                "ModuleSpec", node_id=node.id,
            )
        try:
            if spec.type in FUSED_TYPES:  # purequant.nn's own modules know how to build
                return build_module(spec, self.params)
            return module_from_spec(spec, self.params)
        except PurequantError as e:
            raise TraceError(f"cannot build module {target!r} for %{node.id}: {e.message}",
                             node_id=node.id, hint=e.hint) from e


def _install_all(gm: torch.nn.Module, objects: dict[str, Any]) -> None:
    # Shallow paths first, so a user's module is in place before paths that run through it.
    owned = {id(gm)}
    for path in sorted(objects, key=lambda p: p.count(".")):
        _install(gm, path, objects[path], owned)


def _install(gm: torch.nn.Module, path: str, obj: Any, owned: set[int]) -> None:
    """Place `obj` at `path` under `gm`, creating our own containers, never touching users'."""
    *prefix, field = path.split(".")
    owner = gm
    for i, item in enumerate(prefix):
        child = owner._modules.get(item)
        if child is None:
            child = torch.nn.Module()
            _register(owner, item, child, path)
            owned.add(id(child))
        elif id(child) not in owned:
            # A user's module sits here: it must already hold obj at the rest of the path.
            rest = ".".join(prefix[i + 1:] + [field])
            if _get(child, rest) is not obj:
                raise TraceError(
                    f"cannot install {path!r}: {'.'.join(prefix[:i + 1])!r} is a user's module "
                    f"whose {rest!r} is a different object, and it must not be modified"
                )
            return
        owner = child
    _register(owner, field, obj, path)


def _register(owner: torch.nn.Module, name: str, obj: Any, path: str) -> None:
    try:
        if isinstance(obj, torch.nn.Module):
            owner.add_module(name, obj)
        elif isinstance(obj, torch.nn.Parameter):
            owner.register_parameter(name, obj)
        elif isinstance(obj, torch.Tensor):
            owner.register_buffer(name, obj)
        else:
            setattr(owner, name, obj)
    except (KeyError, TypeError, AttributeError) as e:
        raise TraceError(f"cannot install {path!r} on the GraphModule: {e}") from None


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj

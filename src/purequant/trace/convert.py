"""fx Graph -> purequant Graph, in one pass over the fx nodes.

Each fx node becomes one IR node with the same name as its id. Targets become strings
(call_function targets via `qualified_name`; functions with no importable name get a stable key
and are kept in a `callables` table for the shell). Each node's meta records where it came from:

* `scope`: the module path it was traced in (for call_module, its own target; "" for the root);
* `scope_type`: the qualified class name of that module;
* `src`: `"file.py:LINE"` of the user's source line (absent for placeholders and the output);
* `type` (call_module only): the module's qualified class name;
* `type_index`: for a node of object type T (call_module: the module class, call_function: the
  function's name, call_method: the method name) in scope S, its 0-based index among the
  T-nodes of S, in graph order (what qconfig `module_name_object_type_order` counts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.fx
from pyrsistent import PMap, pmap

from ..errors import TraceError
from ..ir import Graph, GraphBuilder, Node, Ref
from ..qconfig.errors import QualifiedNameError
from ..qconfig.names import qualified_name, resolve_qualified_name
from .specs import type_name
from .values import to_plain

_EMPTY = pmap()
_TYPED_OPS = frozenset({"call_module", "call_function", "call_method"})
_SCALARS = frozenset({type(None), bool, int, float, str})
_FX_NODE = torch.fx.Node

Provenance = Mapping[torch.fx.Node, tuple[str, Any, Any]]


class _Targets:
    """Names call_function targets; keeps the ones with no importable name in `callables`."""

    def __init__(self) -> None:
        self.callables: dict[str, Any] = {}
        self._names: dict[int, tuple[Any, str]] = {}

    def name(self, fn: Any) -> str:
        hit = self._names.get(id(fn))
        if hit is not None and hit[0] is fn:
            return hit[1]
        try:
            name = qualified_name(fn)
        except QualifiedNameError:
            name = self._unique(qualified_name(fn, strict=False), fn)
            self.callables[name] = fn
        self._names[id(fn)] = (fn, name)
        return name

    def _unique(self, base: str, fn: Any) -> str:
        # A key must not collide with another callable's key or with a resolvable name, or the
        # shell would call the wrong function.
        name, k = base, 0
        while (name in self.callables and self.callables[name] is not fn) or _resolvable(name):
            k += 1
            name = f"{base}#{k}"
        return name


def _resolvable(name: str) -> bool:
    try:
        resolve_qualified_name(name)
    except QualifiedNameError:
        return False
    return True


class _Meta:
    """Builds node metas; caches class names and file basenames."""

    def __init__(self, provenance: Provenance, root_type: str, module_types: Mapping[str, str]):
        self.provenance = provenance
        self.root_type = root_type
        self.module_types = module_types
        self.counts: dict[tuple[str, str], int] = {}
        self._types: dict[Any, str] = {}
        self._files: dict[str, str] = {}

    def __call__(self, fx_node: torch.fx.Node, target: str) -> dict[str, Any]:
        scope, scope_cls, src = self.provenance.get(fx_node, ("", None, None))
        meta: dict[str, Any] = {"scope": scope, "scope_type": self._scope_type(scope, scope_cls)}
        if src is not None:
            base = self._files.get(src[0])
            if base is None:
                base = self._files[src[0]] = os.path.basename(src[0])
            meta["src"] = f"{base}:{src[1]}"
        op = fx_node.op
        if op in _TYPED_OPS:
            obj_type = target
            if op == "call_module":
                obj_type = meta["type"] = self.module_types[target]
            key = (scope, obj_type)
            index = self.counts.get(key, 0)
            self.counts[key] = index + 1
            meta["type_index"] = index
        return meta

    def _scope_type(self, scope: str, cls: Any) -> str:
        if cls is None:
            return self.root_type if scope == "" else "<unknown>"
        name = self._types.get(cls)
        if name is None:
            name = self._types[cls] = type_name(cls)
        return name


def graph_from_fx(
    fx_graph: torch.fx.Graph,
    provenance: Provenance,
    root_type: str,
    module_types: Mapping[str, str],
) -> tuple[Graph, dict[str, Any]]:
    """Convert a traced fx Graph into an IR Graph.

    Args:
        fx_graph: the graph torch.fx traced.
        provenance: per fx node, (scope path, scope class, (file, line) or None).
        root_type: qualified class name of the traced model (the scope type of scope "").
        module_types: call_module target -> qualified class name.

    Returns:
        (graph, callables): the IR graph, and key -> function for call_function targets that
        have no importable name. O(nodes + argument sizes); iterative over the nodes.
    """
    if type(fx_graph._codegen) is not torch.fx.graph.CodeGen:
        raise TraceError(
            "the traced graph flattens structured inputs (concrete_args with nested "
            "placeholders), which purequant graphs do not represent",
            hint="pass flat tensors as inputs, or concrete values for non-tensor arguments",
        )
    b = GraphBuilder()
    refs: dict[torch.fx.Node, Ref] = {}
    targets = _Targets()
    make_meta = _Meta(provenance, root_type, module_types)
    kwarg_maps: dict[tuple, PMap] = {}
    for fx_node in fx_graph.nodes:
        name, op = fx_node.name, fx_node.op
        target = targets.name(fx_node.target) if op == "call_function" else fx_node.target
        if type(target) is not str:
            raise TraceError(f"node %{name} ({op}) has a non-string target {target!r}", node_id=name)

        args = _args(fx_node.args, refs, fx_node)
        kwargs = _kwargs(fx_node, refs, kwarg_maps) if fx_node.kwargs else _EMPTY
        ref = b.add(Node(name, op, target, args, kwargs, pmap(make_meta(fx_node, target))))
        refs[fx_node] = ref
    return b.finish(), targets.callables


def _args(values: tuple, refs: dict, fx_node: torch.fx.Node) -> tuple:
    # Edges and scalars, nearly every argument, inline; the rest through to_plain.
    out = []
    for a in values:
        t = type(a)
        if t is _FX_NODE:
            out.append(refs[a])
        elif t in _SCALARS:
            out.append(a)
        else:
            out.append(to_plain(a, refs, fx_node))
    return tuple(out)


def _kwargs(fx_node: torch.fx.Node, refs: dict, interned: dict) -> PMap:
    # Equal all-scalar kwargs (`inplace=False` on every relu) share one map: a PMap costs ~5 us
    # to build, the key a fraction of that. The key holds each value's type, because
    # 1 == 1.0 == True would otherwise hand `dim=True` the map of `dim=1`.
    items = [(k, to_plain(v, refs, fx_node)) for k, v in fx_node.kwargs.items()]
    if not all(type(v) in _SCALARS for _, v in items):
        return pmap(dict(items))
    key = tuple([(k, type(v), v) for k, v in items])
    kwargs = interned.get(key)
    if kwargs is None:
        kwargs = interned[key] = pmap(dict(items))
    return kwargs

"""Argument values across the boundary: fx argument <-> plain IR value.

fx arguments hold fx Nodes, Python scalars, containers (fx's immutable list/dict), slices and a
few torch objects. The IR holds plain data only (see `purequant.ir.node`):

| fx argument                                   | IR value                               |
|-----------------------------------------------|----------------------------------------|
| fx Node                                       | `Ref(node name)`                       |
| None, bool, int, float, str, Ellipsis         | itself                                 |
| tuple / torch.Size                            | tuple (a Size comes back as a tuple)   |
| list, dict                                    | `pvector`, `pmap`                      |
| slice                                         | `Slice`                                |
| torch.dtype, torch.memory_format, torch.layout| `Sym("torch.float32")` etc.            |
| torch.device                                  | `Sym("torch.device:cpu")`              |
| an importable function or class               | `Sym(qualified name)`                  |

Anything else raises TraceError naming the node. Conversion recurses only into literal
containers, so its depth is the nesting depth of one argument, never the graph's depth.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from pyrsistent import PMap, PVector, pmap, pvector

from ..errors import TraceError
from ..ir import Ref, Slice, Sym
from ..qconfig.errors import QualifiedNameError
from ..qconfig.names import qualified_name, resolve_qualified_name

DEVICE_PREFIX = "torch.device:"
_SCALARS = frozenset({type(None), bool, int, float, str})
_NAMED_CONSTANTS = (torch.dtype, torch.memory_format, torch.layout)
_EMPTY_MAP: PMap = pmap()

# object -> Sym and Sym name -> object; both are small (one entry per distinct constant).
_SYM_OF: dict[Any, Sym] = {}
_OBJ_OF: dict[str, Any] = {}


def sym_of(value: Any) -> Sym | None:
    """The Sym naming `value`, or None when it has no name that resolves back to it."""
    try:
        found = _SYM_OF.get(value)
    except TypeError:  # unhashable
        return None
    if found is not None:
        return found
    if isinstance(value, torch.device):
        found = Sym(DEVICE_PREFIX + str(value))
    elif isinstance(value, _NAMED_CONSTANTS):
        found = Sym(str(value)) if _resolves(str(value), value) else None
    elif isinstance(value, type) or callable(value):
        try:
            found = Sym(qualified_name(value))
        except QualifiedNameError:
            found = None
    if found is not None:
        _SYM_OF[value] = found
    return found


def resolve_sym(sym: Sym) -> Any:
    """The Python object a Sym names (cached)."""
    name = sym.name
    obj = _OBJ_OF.get(name, _OBJ_OF)
    if obj is _OBJ_OF:
        if name.startswith(DEVICE_PREFIX):
            obj = torch.device(name[len(DEVICE_PREFIX):])
        else:
            obj = resolve_qualified_name(name)
        _OBJ_OF[name] = obj
    return obj


def _resolves(name: str, value: Any) -> bool:
    try:
        return resolve_qualified_name(name) is value
    except QualifiedNameError:
        return False


def to_plain(a: Any, refs: dict[torch.fx.Node, Ref], where: torch.fx.Node) -> Any:
    """Convert one fx argument of node `where` to a plain IR value."""
    t = type(a)
    if t in _SCALARS:
        return a
    if t is torch.fx.Node:
        return refs[a]
    if t is tuple or t is torch.Size:
        return tuple([to_plain(x, refs, where) for x in a])
    if isinstance(a, list):
        return pvector([to_plain(x, refs, where) for x in a])
    if isinstance(a, dict):
        if not a:
            return _EMPTY_MAP
        return pmap({_key(k, where): to_plain(v, refs, where) for k, v in a.items()})
    if t is slice:
        return Slice(to_plain(a.start, refs, where), to_plain(a.stop, refs, where),
                     to_plain(a.step, refs, where))
    if a is Ellipsis:
        return a
    sym = sym_of(a)
    if sym is not None:
        return sym
    raise TraceError(
        f"{_node(where)}: argument {_short(a)} of type {t.__module__}.{t.__qualname__} cannot be "
        "represented in a purequant graph",
        hint="graphs hold plain values only (numbers, strings, tuples, lists, dicts, slices, "
        "dtypes, devices, importable functions); compute this value inside a leaf module or "
        "pass it as an input",
        node_id=where.name,
    )


def _key(k: Any, where: torch.fx.Node) -> Any:
    if type(k) in _SCALARS:
        return k
    raise TraceError(f"{_node(where)}: dict key {_short(k)} is not a plain value",
                     node_id=where.name)


def _node(fx_node: torch.fx.Node) -> str:
    return f"node %{fx_node.name} ({fx_node.op} {fx_node.target})"


def to_fx(v: Any, env: dict[str, torch.fx.Node]) -> Any:
    """Convert one plain IR value back to an fx argument (Refs become fx Nodes of `env`)."""
    t = type(v)
    if t in _SCALARS:
        return v
    if t is Ref:
        return env[v.id]
    if t is tuple:
        return tuple([to_fx(x, env) for x in v])
    if t is Sym:
        return resolve_sym(v)
    if isinstance(v, PVector):
        return [to_fx(x, env) for x in v]
    if isinstance(v, PMap):
        return {k: to_fx(x, env) for k, x in v.items()}
    if t is Slice:
        return slice(to_fx(v.start, env), to_fx(v.stop, env), to_fx(v.step, env))
    return v  # Ellipsis


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

"""Reading a model's modules and tensors into plain data (ModuleSpec) and a params table.

Everything here only reads the model: no attribute is set, nothing is copied.
"""

from __future__ import annotations

from typing import Any

import torch
from pyrsistent import pmap

from ..ir import ModuleSpec
from ..qconfig.names import qualified_name

_SCALARS = (type(None), bool, int, float, str)


def type_name(cls: type) -> str:
    """Qualified name of a class; `module.qualname` for classes that cannot be imported by name."""
    return qualified_name(cls, strict=False)


def is_plain(value: Any) -> bool:
    """True for None, bool, int, float, str and (nested) tuples of those."""
    return _plain_key(value) is not None


def _plain_key(value: Any) -> tuple | None:
    # None unless `value` is plain; else a key equal only for equal values of equal types
    # (1 == 1.0 == True, so the value alone would not do).
    t = type(value)
    if t in _SCALARS:
        return (t, value)
    if t is not tuple:
        return None
    parts: list = [tuple]
    for item in value:
        key = _plain_key(item)
        if key is None:
            return None
        parts.append(key)
    return tuple(parts)


def plain_attrs(module: torch.nn.Module) -> dict[str, Any]:
    """The module's public plain hyperparameters, read from its `__dict__` (plus `training`).

    O(attributes). Private names (`_reversed_padding_repeated_twice`) and anything that is not
    plain (tensors, modules, lists, callables) are left out.
    """
    return _attrs_and_key(module)[0]


def _attrs_and_key(module: torch.nn.Module) -> tuple[dict[str, Any], tuple]:
    # Equal keys mean equal attrs of equal types (see _plain_key).
    attrs: dict[str, Any] = {}
    key: list = [type(module)]
    for k, v in vars(module).items():
        if k[0] == "_":
            continue
        t = type(v)
        if t in _SCALARS:
            attrs[k] = v
            key += (k, t, v)
        elif t is tuple:
            vkey = _plain_key(v)
            if vkey is not None:
                attrs[k] = v
                key += (k, vkey)
    return attrs, tuple(key)


def module_spec(module: torch.nn.Module, path: str, interned: dict | None = None) -> ModuleSpec:
    """The ModuleSpec of `module` sitting at `path` in the model.

    `params` maps every local parameter and buffer name, nested ones included
    (`out_proj.weight`), to its full path; a declared-but-absent one (a conv's bias with
    `bias=False`) maps to None. O(parameters and submodules of `module`).

    `interned`, when given, is a dict shared across calls: equal attrs maps are built once and
    shared (a model's many identical layers then cost one map).
    """
    attrs, key = _attrs_and_key(module)
    attrs_map = None if interned is None else interned.get(key)
    if attrs_map is None:
        attrs_map = pmap(attrs)
        if interned is not None:
            interned[key] = attrs_map
    params: dict[str, str | None] = {}
    subs = module.named_modules(remove_duplicate=False) if module._modules else (("", module),)
    for sub_path, sub in subs:
        for table in (sub._parameters, sub._buffers):
            for name, tensor in table.items():
                local = f"{sub_path}.{name}" if sub_path else name
                if local not in params:
                    params[local] = None if tensor is None else _join(path, local)
    return ModuleSpec(type_name(type(module)), attrs_map, pmap(params))


def params_table(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of `model` by full path, shared ones under each path. O(n)."""
    return tensor_tables(model)[0]


def tensor_tables(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[int, str], dict[int, str]]:
    """`params_table(model)`, and the first path of every parameter and of every buffer (by
    `id`), in one walk over the modules instead of four.

    The table is `named_parameters(remove_duplicate=False)` then `named_buffers(...)`, in that
    order; the first paths are what `named_parameters()`/`named_buffers()` (which skip repeats)
    name each tensor: a tensor's first path in the full walk, since repeats come later. O(n).
    """
    params: list[tuple[str, torch.Tensor]] = []
    buffers: list[tuple[str, torch.Tensor]] = []
    for prefix, module in model.named_modules(remove_duplicate=False):
        dot = prefix + "." if prefix else ""
        params += [(dot + k, v) for k, v in module._parameters.items() if v is not None]
        buffers += [(dot + k, v) for k, v in module._buffers.items() if v is not None]
    table = dict(params)
    table.update(buffers)
    first_param: dict[int, str] = {}
    for path, p in params:
        first_param.setdefault(id(p), path)
    first_buffer: dict[int, str] = {}
    for path, b in buffers:
        first_buffer.setdefault(id(b), path)
    return table, first_param, first_buffer


def attr_at(model: torch.nn.Module, path: str) -> Any:
    """The object at dotted `path` under `model`, by plain attribute reads. O(depth)."""
    obj: Any = model
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name

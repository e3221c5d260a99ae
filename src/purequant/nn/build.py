"""Materialise one module from its ModuleSpec and the params table.

`build_module(spec, params)` is the hook the emitter (`purequant.trace`) calls for specs a stage
made or changed: the fused types of `purequant.nn` and built-in torch.nn modules whose tensors a
stage replaced (a conv with batch norm folded into it). It builds the module without running
`__init__`, so no default initialisation draws from torch's global RNG and nothing is copied:
the module's attributes are the spec's attrs, its tensors are the params entries themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import StageError
from ..ir import ModuleSpec
from ..qconfig.errors import QualifiedNameError
from ..qconfig.names import resolve_qualified_name
from .fused import FUSED_TYPES

# Local names that are buffers, not parameters, when the params entry is a plain tensor.
BUFFER_NAMES = frozenset({"running_mean", "running_var", "num_batches_tracked"})


def build_module(spec: ModuleSpec, params: Mapping[str, torch.Tensor]) -> nn.Module:
    """A fresh nn.Module for `spec`, holding the tensors of `params` its spec names.

    Reads spec.type (a `purequant.nn` fused type or a `torch.nn` type), spec.attrs (set as
    attributes; `child.name` keys go to child `child`) and spec.params (local name -> path in
    `params`; None registers an absent tensor, e.g. a conv without bias). Parameters stay the
    very objects in `params` (plain tensors are wrapped in an nn.Parameter sharing storage, or
    registered as buffers for BUFFER_NAMES). Pure apart from allocating the module;
    O(attrs + params).

    Raises:
        StageError: the type cannot be built this way, a path is missing from `params`, or a
            dotted name has no child of that name.
    """
    cls, children = module_class(spec.type)
    own_attrs, child_attrs = _split(spec.attrs)
    own_params, child_params = _split(spec.params)
    unknown = (set(child_attrs) | set(child_params)) - set(children)
    if unknown:
        raise StageError(f"spec of type {spec.type} names unknown children {sorted(unknown)}")
    module = _assemble(cls, own_attrs, own_params, params)
    for name, child_cls in children.items():
        child = _assemble(child_cls, child_attrs.get(name, {}), child_params.get(name, {}), params)
        module.add_module(name, child)
    return module


def module_class(type_name: str) -> tuple[type[nn.Module], dict[str, type[nn.Module]]]:
    """The class `type_name` names and its child classes (by attribute name). O(1) cached."""
    found = FUSED_TYPES.get(type_name)
    if found is not None:
        return found
    if type_name.startswith("torch.nn."):
        try:
            cls = resolve_qualified_name(type_name)
        except QualifiedNameError as e:
            raise StageError(f"cannot build module type {type_name}: {e}") from None
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls, {}
    raise StageError(
        f"cannot build a module of type {type_name} from its spec",
        hint="only purequant.nn fused types and torch.nn leaf modules are built from specs; "
        "keep the user's module object for other types",
    )


def _split(entries: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    own: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in entries.items():
        head, dot, rest = key.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            own[key] = value
    return own, nested


def _assemble(
    cls: type[nn.Module], attrs: Mapping[str, Any], names: Mapping[str, str | None], params: Mapping
) -> nn.Module:
    # Skip __init__: it would allocate and randomly initialise tensors we replace anyway.
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    module.__dict__.update(attrs)
    for name, path in names.items():
        _register(module, name, path, params)
    if isinstance(module, nn.modules.conv._ConvNd):
        _complete_conv(module)
    return module


def _register(module: nn.Module, name: str, path: str | None, params: Mapping) -> None:
    if path is None:
        tensor = None
    elif path in params:
        tensor = params[path]
    else:
        raise StageError(f"params has no entry {path!r} (local name {name!r} of a module spec)")
    if tensor is None or isinstance(tensor, nn.Parameter):
        module.register_parameter(name, tensor)
    elif name in BUFFER_NAMES:
        module.register_buffer(name, tensor)
    else:
        module.register_parameter(name, nn.Parameter(tensor, requires_grad=tensor.requires_grad))


def _complete_conv(conv: nn.Module) -> None:
    # Conv forward needs this for non-zero padding modes; a spec may have left out private
    # attributes, so derive it from `padding` the way the conv's own __init__ defines it.
    if "_reversed_padding_repeated_twice" in conv.__dict__:
        return
    padding, kernel, dilation = conv.padding, conv.kernel_size, conv.dilation
    pairs: list[int] = []
    for d in reversed(range(len(kernel))):
        if padding == "valid":
            left = right = 0
        elif padding == "same":
            total = dilation[d] * (kernel[d] - 1)
            left, right = total // 2, total - total // 2
        else:
            left = right = padding[d]
        pairs += [left, right]
    conv._reversed_padding_repeated_twice = tuple(pairs)

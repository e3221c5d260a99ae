"""Building a module from its ModuleSpec and the params table (for modules stages create).

Supported, generically: classes whose constructor takes its hyperparameters under the same
names it stores them in `__dict__`, with a `bool` flag per optional parameter named like the
parameter (`bias`), and a `device` argument. That covers the torch.nn layers stages produce or
rebuild: Conv1d/2d/3d, ConvTranspose*, Linear, BatchNorm*, LayerNorm, GroupNorm, Embedding,
ReLU and the other activations, pooling, Dropout, Identity, Flatten.

The module is constructed on the `meta` device with in-place ops on meta tensors skipped (no
memory, no random init), then its
attributes are set from the spec and every parameter and buffer is replaced by the params
table's tensor (the very object; a Parameter stays a parameter, a plain tensor becomes a
buffer). A module that would keep any meta tensor is an error.

Not supported (pass such modules in `module_objects` instead): constructors taking
`*args/**kwargs` only (nn.LSTM), and modules with derived state computed in `__init__` from
their parameters (LSTM's `_flat_weights`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..errors import TraceError
from ..ir import ModuleSpec
from ..qconfig.errors import QualifiedNameError
from ..qconfig.names import resolve_qualified_name


def module_from_spec(spec: ModuleSpec, params: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A new module of `spec.type` with `spec`'s hyperparameters and the tables' tensors.

    O(constructor + parameters). Raises TraceError saying what is missing or unsupported.
    """
    try:
        cls = resolve_qualified_name(spec.type)
    except QualifiedNameError as e:
        raise TraceError(f"cannot build a {spec.type}: {e.message}") from None
    kwargs = _constructor_kwargs(cls, spec)
    try:
        with _SkipInit():
            module = cls(**kwargs)
    except Exception as e:
        raise TraceError(f"cannot build {spec.type}(**{kwargs!r}) from its ModuleSpec: {e}") from e
    for name, value in spec.attrs.items():
        if name in vars(module) and getattr(module, name) != value:
            setattr(module, name, value)
    for local, path in spec.params.items():
        _set_tensor(module, local, None if path is None else _param(params, path, spec))
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_meta:
            raise TraceError(f"the ModuleSpec of a {spec.type} does not provide {name!r}")
    return module


class _SkipInit(TorchFunctionMode):
    """Makes in-place ops on meta tensors (the random init in constructors) no-ops.

    Every parameter is replaced right after, so initialising is wasted work; and on meta tensors
    some init kernels are Python decompositions whose first use costs seconds of imports.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):
            # torch.nn.init functions pass the tensor by keyword (`tensor=`).
            first = args[0] if args else next(iter(kwargs.values()), None)
            if isinstance(first, torch.Tensor) and first.is_meta:
                return first
        return func(*args, **kwargs)


@functools.lru_cache(maxsize=256)
def _signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.__init__)


def _constructor_kwargs(cls: type, spec: ModuleSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    missing = []
    for name, p in list(_signature(cls).parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in spec.attrs:
            kwargs[name] = spec.attrs[name]
        elif name in spec.params and isinstance(p.default, bool):
            kwargs[name] = spec.params[name] is not None
        elif name == "device":
            kwargs[name] = "meta"
        elif p.default is p.empty:
            missing.append(name)
    if missing:
        raise TraceError(
            f"cannot build a {spec.type} from its ModuleSpec: the constructor needs "
            f"{', '.join(missing)}, which the spec's attrs do not hold",
            hint="pass the module object in module_objects instead",
        )
    return kwargs


def _param(params: Mapping[str, torch.Tensor], path: str, spec: ModuleSpec) -> torch.Tensor:
    tensor = params.get(path)
    if tensor is None:
        raise TraceError(f"the ModuleSpec of a {spec.type} names {path!r}, which is not in params")
    return tensor


def _set_tensor(module: torch.nn.Module, local: str, tensor: torch.Tensor | None) -> None:
    *prefix, name = local.split(".")
    owner = module.get_submodule(".".join(prefix)) if prefix else module
    if tensor is None:
        table = owner._buffers if name in owner._buffers else owner._parameters
        table[name] = None
        return
    if isinstance(tensor, torch.nn.Parameter):
        owner._buffers.pop(name, None)
        owner._parameters[name] = tensor
        return
    persistent = name not in owner._non_persistent_buffers_set
    owner._parameters.pop(name, None)
    owner.register_buffer(name, tensor, persistent=persistent)

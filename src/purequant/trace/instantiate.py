"""Building a module from its ModuleSpec and the params table (for modules stages create).

Supported, generically: classes whose constructor takes its hyperparameters under the same
names it stores them in `__dict__`, with a `bool` flag per optional parameter named like the
parameter (`bias`), and a `device` argument. That covers the torch.nn layers stages produce or
rebuild: Conv1d/2d/3d, ConvTranspose*, Linear, BatchNorm*, LayerNorm, GroupNorm, Embedding,
EmbeddingBag, MultiheadAttention, the RNN cells, ReLU and the other activations, pooling,
Dropout, Identity, Flatten.

A constructor taking only `*args/**kwargs` (nn.LSTM, GRU, RNN) is read through the named
signature it declares with `typing.overload` (Python 3.11+); failing that, through the first
base class in the MRO whose `__init__` names its parameters (`RNNBase.__init__(self, mode,
input_size, ...)`), which is then called directly on a bare instance, and the spec's attrs the
skipped subclass `__init__` would have set (RNN's `nonlinearity`) are set after.

The module is constructed on the `meta` device with in-place ops on meta tensors skipped (no
memory, no random init), then its
attributes are set from the spec and every parameter and buffer is replaced by the params
table's tensor (the very object; a Parameter stays a parameter, a plain tensor becomes a
buffer). A module that would keep any meta tensor is an error. Last, state the module derives
from its parameters in `__init__` is recomputed by the module's own method (RNNs'
`_init_flat_weights`, with cuDNN off so the tensors are not repacked in place).

Not supported (pass such modules in `module_objects` instead): other derived state, and
constructors whose hyperparameters cannot be read by name from the spec's attrs.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Mapping
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..errors import TraceError
from ..ir import ModuleSpec
from ..qconfig.errors import QualifiedNameError
from ..qconfig.names import resolve_qualified_name
from .specs import type_name


def module_from_spec(spec: ModuleSpec, params: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A new module of `spec.type` with `spec`'s hyperparameters and the tables' tensors.

    O(constructor + parameters). The params table's tensors are installed as they are, never
    written to. Raises TraceError saying what is missing or unsupported.
    """
    try:
        cls = resolve_qualified_name(spec.type)
    except QualifiedNameError as e:
        raise TraceError(f"cannot build a {spec.type}: {e.message}") from None
    module = _construct(cls, spec)
    for name, value in spec.attrs.items():
        if name in vars(module) and getattr(module, name) != value:
            setattr(module, name, value)
    for local, path in spec.params.items():
        _set_tensor(module, local, None if path is None else _param(params, path, spec), spec)
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_meta:
            raise TraceError(f"the ModuleSpec of a {spec.type} does not provide {name!r}")
    _refresh_derived(module)
    return module


def _construct(cls: Any, spec: ModuleSpec) -> torch.nn.Module:
    signature, base = _constructor(cls)
    kwargs = _constructor_kwargs(signature, spec)
    call = spec.type if base is None else f"a {spec.type} through {type_name(base)}.__init__"
    try:
        with _SkipInit():
            if base is None:
                module = cls(**kwargs)
            else:
                module = cls.__new__(cls)
                _init_of(base)(module, **kwargs)
    except Exception as e:
        raise TraceError(f"cannot build {call}(**{kwargs!r}) from its ModuleSpec: {e}") from e
    if base is not None:
        # The subclass __init__ did not run: set what it would have (RNN's `nonlinearity`).
        for name, value in spec.attrs.items():
            if name not in vars(module) and not hasattr(cls, name):
                setattr(module, name, value)
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
def _constructor(cls: type) -> tuple[inspect.Signature, type | None]:
    """The signature naming `cls`'s hyperparameters, and the base class to call it on (or None).

    None means `cls(**kwargs)`: its own `__init__` names them, or a `typing.overload` of it does
    (nn.LSTM declares `(input_size, hidden_size, ...)` over `(*args, **kwargs)`). Otherwise the
    first base in the MRO whose `__init__` names them (RNNBase, which also takes `mode`).
    """
    own = inspect.signature(_init_of(cls))
    if _names_parameters(own):
        return own, None
    for overload in _get_overloads(_init_of(cls)):
        signature = inspect.signature(overload)
        if _names_parameters(signature):
            return signature, None
    for base in cls.__mro__[1:]:
        signature = inspect.signature(_init_of(base))
        if _names_parameters(signature):
            return signature, base
    return own, None  # no parameters anywhere: nn.Identity(*args, **kwargs) takes none


def _init_of(cls: type) -> Any:
    return cls.__init__  # type: ignore[misc]  # the class's own, not an instance's


_VARIADIC = frozenset({inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD})


def _names_parameters(signature: inspect.Signature) -> bool:
    # `(self, *args, **kwargs)` names none; `(self)` has none to name, so it counts.
    kinds = {p.kind for p in list(signature.parameters.values())[1:]}
    return not kinds or bool(kinds - _VARIADIC)


def _get_overloads(func: Any) -> tuple:
    get = getattr(typing, "get_overloads", None)  # Python 3.11+
    return () if get is None else tuple(get(func))


def _constructor_kwargs(signature: inspect.Signature, spec: ModuleSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    missing = []
    for name, p in list(signature.parameters.items())[1:]:
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


def _set_tensor(
    module: torch.nn.Module, local: str, tensor: torch.Tensor | None, spec: ModuleSpec
) -> None:
    *prefix, name = local.split(".")
    try:
        owner = module.get_submodule(".".join(prefix)) if prefix else module
    except AttributeError:
        raise TraceError(f"the ModuleSpec of a {spec.type} names {local!r}, but the module "
                         "built from it has no such submodule") from None
    if tensor is None:
        table = owner._buffers if name in owner._buffers else owner._parameters
        table[name] = None
        return
    # A constructor may leave a plain attribute where the spec has a tensor (MultiheadAttention
    # sets `bias_k = None` unless add_bias_kv, which it does not store); it would shadow it.
    owner.__dict__.pop(name, None)
    if isinstance(tensor, torch.nn.Parameter):
        owner._buffers.pop(name, None)
        owner._parameters[name] = tensor
        return
    persistent = name not in owner._non_persistent_buffers_set
    owner._parameters.pop(name, None)
    owner.register_buffer(name, tensor, persistent=persistent)


# Methods by which torch modules recompute state their __init__ derived from their parameters:
# RNNBase keeps `_flat_weights`, a list of the parameter objects its forward passes to the kernel.
_REFRESH_METHODS = ("_init_flat_weights",)


def _refresh_derived(module: torch.nn.Module) -> None:
    for sub in module.modules():
        for name in _REFRESH_METHODS:
            refresh = getattr(sub, name, None)
            if callable(refresh):
                # With cuDNN on, RNNBase.flatten_parameters would repack CUDA weights into one
                # buffer and re-point the tensors at it: the params table's, i.e. the user's.
                with torch.backends.cudnn.flags(enabled=False):
                    refresh()

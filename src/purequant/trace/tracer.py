"""The torch.fx Tracer we capture with: fx's own tracing, plus provenance, without side effects.

Differences from `torch.fx.Tracer`, all through its public override points:

* `create_node` records, per fx node, the module scope it was traced in (fx's `scope`) and the
  user's source line (the innermost frame outside torch, the stdlib and this package; found by a
  short frame walk with a per-file cache, so it costs about a microsecond a node).
* `create_arg` stores tensor constants (`_tensor_constant0`, ...) in a side table instead of
  `setattr` on the user's root module, so tracing never mutates the model.
* `getattr`/`create_arg` find a parameter's path in a dict built once instead of scanning
  `named_parameters()` on every access (fx's scan is O(parameters) per access).
* `call_module` notes the innermost module a tracing failure happened in, for the error message.
* `path_of_module` remembers the module behind every path it hands out (`module_at`), so the
  conversion finds a call_module target's module without walking the path again.
* `is_leaf_module` also honours the user's `leaf_modules` (classes and paths).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from types import FrameType
from typing import Any

import torch
import torch.fx
from torch.fx import _symbolic_trace as _fx_trace

from ..errors import TraceError
from .specs import tensor_tables

_SKIP_DIRS = (
    os.path.dirname(torch.__file__) + os.sep,
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    sysconfig.get_paths()["stdlib"] + os.sep,
)
_SCALARS = frozenset({type(None), bool, int, float, str})
# filename -> True when frames of that file are internal (torch, stdlib, this package).
_INTERNAL: dict[str, bool] = {}


def _internal(filename: str) -> bool:
    flag = _INTERNAL.get(filename)
    if flag is None:
        flag = _INTERNAL[filename] = filename.startswith(_SKIP_DIRS)
    return flag


def user_frame(frame: FrameType | None) -> tuple[str, int] | None:
    """(filename, line) of the innermost frame at or above `frame` that is the user's code.

    Walks `f_back` links (iterative); O(frames between the user and here), each O(1).
    """
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _internal(filename):
            return filename, frame.f_lineno
        frame = frame.f_back
    return None


def user_frame_of_traceback(tb: Any) -> tuple[str, int] | None:
    """(filename, line) of the innermost user frame in a traceback, or None."""
    found = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not _internal(filename):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


class CaptureTracer(torch.fx.Tracer):
    """A torch.fx Tracer that records provenance and leaves the traced model untouched.

    Attributes (filled by `trace`):
        provenance: fx node -> (scope path, scope module type or None, (file, line) or None).
        constants: name -> tensor for constants met while tracing (`_tensor_constant0`, ...).
        module_at: path -> module, for every module path fx handed out while tracing.
        params_table: every parameter and buffer of the root by full path (`specs.params_table`).
        failed_in: (path, type) of the innermost module whose call raised, if tracing failed.
    """

    def __init__(self, root: torch.nn.Module, leaf_types: tuple[type, ...], leaf_paths: frozenset[str]):
        super().__init__()
        self._leaf_types = leaf_types
        self._leaf_paths = leaf_paths
        self.provenance: dict[torch.fx.Node, tuple[str, type | None, tuple[str, int] | None]] = {}
        self.constants: dict[str, torch.Tensor] = {}
        self.failed_in: tuple[str, type] | None = None
        self.module_at: dict[str, torch.nn.Module] = {}
        self._arg_scope: tuple[str, type | None] | None = None
        # First path wins, as in fx (named_parameters/named_buffers deduplicate in this order);
        # the walk also gives every tensor by full path, which from_fx reads (`params_table`).
        self.params_table, self._param_paths, self._buffer_paths = tensor_tables(root)
        self._root = root
        self._next_constant = 0

    # ------------------------------------------------------------------ leaves
    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return (
            module_qualified_name in self._leaf_paths
            or isinstance(m, self._leaf_types)
            or super().is_leaf_module(m, module_qualified_name)
        )

    def path_of_module(self, mod: torch.nn.Module) -> str:
        path = super().path_of_module(mod)
        self.module_at[path] = mod  # fx names call_module targets by this path
        return path

    def call_module(self, m: torch.nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            # Handlers run innermost first, so the first one to see the error names the module.
            if self.failed_in is None:
                path = (self.submodule_paths or {}).get(m, "<unregistered module>")
                self.failed_in = (path, type(m))
            raise

    # ------------------------------------------------------------- provenance
    def create_node(self, kind: str, target: Any, args: tuple, kwargs: dict,
                    name: str | None = None, type_expr: Any | None = None) -> torch.fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        src = None if kind in ("placeholder", "output") else user_frame(sys._getframe(1))
        scope = self._arg_scope if self._arg_scope is not None and kind != "call_module" else None
        if scope is None:
            scope = (self.scope.module_path, self.scope.module_type)
        self.provenance[node] = (scope[0], scope[1], src)
        return node

    def create_proxy(self, kind: str, target: Any, args: tuple, kwargs: dict, *rest: Any, **kw: Any) -> Any:
        if kind != "call_module":
            return super().create_proxy(kind, target, args, kwargs, *rest, **kw)
        # fx turns a leaf call's arguments into nodes (get_attr of a buffer, ...) inside the
        # leaf's scope; they belong to the caller's, where the user's code reads them.
        stack = list(self.module_stack.values())
        self._arg_scope = stack[-2] if len(stack) > 1 else ("", None)
        try:
            return super().create_proxy(kind, target, args, kwargs, *rest, **kw)
        finally:
            self._arg_scope = None

    # ---------------------------------------------------------- params/consts
    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if isinstance(attr_val, torch.nn.Parameter):
            path = self._param_paths.get(id(attr_val))
        elif self.proxy_buffer_attributes and isinstance(attr_val, torch.Tensor):
            path = self._buffer_paths.get(id(attr_val))
        else:
            return attr_val
        if path is None:
            return attr_val
        proxy = parameter_proxy_cache.get(path)
        if proxy is None:
            proxy = parameter_proxy_cache[path] = self.create_proxy("get_attr", path, (), {})
        return proxy

    def create_arg(self, a: Any) -> Any:
        t = type(a)
        # The two commonest arguments first: fx's own checks (isinstance against Parameter's
        # metaclass, constant types, opaque types) would all fail for them before its base
        # class returns exactly this.
        if t is torch.fx.Proxy:
            return a.node
        if t in _SCALARS:
            return a
        if isinstance(a, torch.Tensor):
            path = self._param_paths.get(id(a)) if isinstance(a, torch.nn.Parameter) else None
            path = path or self._buffer_paths.get(id(a)) or self.tensor_attrs.get(a)
            if path is None:
                path = self._new_constant(a)
            return self.create_node("get_attr", path, (), {})
        if isinstance(a, _fx_trace._constant_attribute_types) and a not in self.tensor_attrs:
            raise TraceError(
                f"cannot capture the constant {type(a).__name__} {a!r}: only tensors can be "
                "stored as graph constants",
                hint="make it an attribute of a module, or build it inside a leaf module",
            )
        if type(a) in getattr(_fx_trace, "_proxyable_classes", {}):
            raise TraceError(
                f"cannot capture a {type(a).__name__} instance built outside the traced code",
                hint="construct it inside forward, or pass it through a leaf module",
            )
        return super().create_arg(a)

    def _new_constant(self, tensor: torch.Tensor) -> str:
        # fx would setattr the tensor onto the user's root; we keep it in a side table instead.
        root = self._root
        while True:
            name = f"_tensor_constant{self._next_constant}"
            self._next_constant += 1
            taken = (name in vars(root) or name in root._parameters or name in root._buffers
                     or name in root._modules or hasattr(type(root), name))
            if not taken:
                break
        self.constants[name] = tensor
        self.tensor_attrs[tensor] = name
        return name

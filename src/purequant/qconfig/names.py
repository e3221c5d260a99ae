"""Qualified names: the serialisable identity of the classes and functions a graph refers to.

The IR stores call targets and qconfig object types as strings so that graphs, specs and records
stay plain data. These functions are the one place that turns objects into such strings and back:

* `qualified_name(obj)` gives the canonical importable name of a class or function, e.g.
  `torch.nn.modules.conv.Conv2d` -> `"torch.nn.Conv2d"`, `operator.add` -> `"operator.add"`
  (not `_operator.add`), `torch.nn.functional.linear` -> `"torch.nn.functional.linear"` (not
  `torch._C._nn.linear`), `getattr` -> `"builtins.getattr"`, `torch.Tensor.view` ->
  `"torch.Tensor.view"`. A name is only returned once `resolve_qualified_name` maps it back to
  the very same object.
* `resolve_qualified_name(name)` imports and walks attributes to get the object back.
* `object_type_key(obj_or_str)` is the key used by qconfig object-type entries: a qualified name
  for classes and functions, and the bare method name (`"relu"`, `"reshape"`) for Tensor methods,
  because torch.fx records `call_method` targets as bare names.

Canonical means *shortest public re-export*: among the prefixes of the defining module, the
shortest one that exposes the same object under the same name wins. So `Conv2d` is
`torch.nn.Conv2d` and `torch.nn.functional.conv2d` (which *is* `torch.conv2d`) is
`torch.conv2d`: two spellings of one object always give one key.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import types
import warnings
from typing import Any

from purequant.qconfig.errors import QualifiedNameError

# Modules whose objects are re-exported under a public name. Checked before the module's own
# prefixes, so C-implemented functions get the name users write.
_MODULE_ALIASES = {
    "_operator": "operator",
    "torch._C._nn": "torch.nn.functional",
    "torch._C._VariableFunctions": "torch",
    "torch._C._linalg": "torch.linalg",
    "torch._C._fft": "torch.fft",
    "torch._C._special": "torch.special",
    "torch._C._nested": "torch.nested",
}

# Prefixes a Tensor method name may carry in a user's object-type string.
_TENSOR_PREFIXES = ("torch.Tensor.", "Tensor.")


def qualified_name(obj: Any, *, strict: bool = True) -> str:
    """Return the canonical importable name of a class or function.

    Args:
        obj: a class, function, builtin or method descriptor (e.g. `torch.Tensor.view`).
        strict: when True (default) raise unless the name resolves back to `obj`. When False,
            fall back to `module.qualname` for objects that cannot be imported by name (classes
            defined inside a function, objects from `__main__` of another process); such names
            are stable keys for matching but `resolve_qualified_name` cannot load them.

    Returns:
        A dotted name such that `resolve_qualified_name(name) is obj` (when strict).

    Raises:
        QualifiedNameError: `obj` is a string or has no importable name (strict only).
    """
    if isinstance(obj, str):
        raise QualifiedNameError(
            f"qualified_name() takes a class or function, got the string {obj!r}; "
            "use object_type_key() to canonicalise strings"
        )
    try:
        return _cached_name(obj)
    except TypeError:  # unhashable objects bypass the cache
        return _compute_name(obj) if strict else _fallback_or_name(obj)
    except QualifiedNameError:
        if strict:
            raise
        return _fallback_or_name(obj)


def resolve_qualified_name(name: str) -> Any:
    """Import the module part of `name` and walk the remaining attributes.

    Args:
        name: a dotted name such as `"torch.nn.Conv2d"` or `"operator.add"`.

    Returns:
        The object the name refers to.

    Raises:
        QualifiedNameError: the name has no module part, its first component does not import,
            or an attribute along the way is missing.
    """
    if not isinstance(name, str) or not name:
        raise QualifiedNameError(f"expected a non-empty dotted name, got {name!r}")
    parts = name.split(".")
    if len(parts) < 2 or not all(parts):
        raise QualifiedNameError(
            f"{name!r} is not a qualified name (expected 'module.attr', e.g. 'torch.add'); "
            "bare names such as 'relu' are Tensor method names and do not resolve to an object"
        )
    obj = _import(parts[0], name)
    for i in range(1, len(parts)):
        obj = _step(obj, parts, i, name)
    return obj


def object_type_key(obj: Any) -> str:
    """Return the key a qconfig object-type entry uses for `obj`.

    Args:
        obj: a class, a function, a Tensor method (`torch.Tensor.relu`), or a string: a method
            name (`"reshape"`), a qualified name (`"torch.nn.modules.conv.Conv2d"` is
            canonicalised to `"torch.nn.Conv2d"`), or `"Tensor.relu"` (-> `"relu"`).

    Returns:
        The canonical key. Dotted strings that do not import here are kept verbatim: they may
        name a user class that only the tracing process can import.

    Raises:
        QualifiedNameError: `obj` is not a class, a routine or a string.
    """
    if isinstance(obj, str):
        return _string_key(obj)
    if not _is_nameable(obj):
        raise QualifiedNameError(
            f"an object type must be a class, a function or a name string; got "
            f"{type(obj).__name__} {_short_repr(obj)}"
            + (" (an instance: pass its class instead)" if callable(obj) else "")
        )
    method = _tensor_method_name(obj)
    if method is not None:
        return method
    return qualified_name(obj, strict=False)


def _is_nameable(obj: Any) -> bool:
    # torch.ops operators (OpOverloadPacket/OpOverload) are callable objects, not routines.
    is_op = hasattr(obj, "_qualified_op_name") or hasattr(obj, "_overloadpacket")
    return isinstance(obj, type) or inspect.isroutine(obj) or is_op


# --- naming -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _cached_name(obj: Any) -> str:
    # lru_cache does not cache exceptions, so failures are recomputed (and re-raised) each time.
    return _compute_name(obj)


def _compute_name(obj: Any) -> str:
    tried: list[str] = []
    for module in _home_modules(obj):
        candidates = _candidates(obj, module)
        tried += candidates
        for candidate in candidates:
            if _resolves_to(candidate, obj):
                return candidate
        # Public re-exports may rename (torch.linalg.norm is torch._C._linalg.linalg_norm).
        found = _search_module(obj, module)
        if found is not None:
            return found
    raise QualifiedNameError(
        f"cannot name {_short_repr(obj)}: no importable name resolves back to it "
        f"(tried {tried[:6]}{' ...' if len(tried) > 6 else ''}). Define it at module "
        "level in an importable module, or refer to it by a string key"
    )


def _fallback_or_name(obj: Any) -> str:
    try:
        return _compute_name(obj)
    except QualifiedNameError:
        module = getattr(obj, "__module__", None) or "<unknown>"
        qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        return f"{module}.{qual or type(obj).__name__}"


def _home_modules(obj: Any) -> list[str]:
    """Modules to look for `obj` in: its public alias (if any) first, then its own module."""
    op_name = getattr(obj, "_qualified_op_name", None) or getattr(
        getattr(obj, "_overloadpacket", None), "_qualified_op_name", None
    )
    if isinstance(op_name, str):
        # A torch.ops operator: "quantized::add" lives in torch.ops.quantized.
        return [f"torch.ops.{op_name.split('::')[0]}"]
    owner = getattr(obj, "__objclass__", None)
    if isinstance(owner, type):
        return [""]  # named through its owner class, see _candidates
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str):
        return []
    return [_MODULE_ALIASES[module], module] if module in _MODULE_ALIASES else [module]


def _candidates(obj: Any, module: str) -> list[str]:
    owner = getattr(obj, "__objclass__", None)
    if isinstance(owner, type):  # method/slot descriptor of a class, e.g. TensorBase.view
        return [f"{cls}.{obj.__name__}" for cls in _owner_names(owner)]
    if module.startswith("torch.ops."):
        return [_op_name(obj, module)]
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    name = getattr(obj, "__name__", None)
    if not isinstance(qual, str):
        return []
    quals = [qual] if name in (None, qual) else [qual, name]
    if _has_hidden_owner(qual):
        # e.g. torch.add's qualname is `_VariableFunctionsClass.add` and F.max_pool2d's is
        # `boolean_dispatch.<locals>.fn`; both are exported under their __name__ only.
        quals.reverse()
    parts = module.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return list(dict.fromkeys(f"{p}.{q}" for q in quals for p in prefixes))


def _op_name(obj: Any, namespace: str) -> str:
    packet = getattr(obj, "_overloadpacket", None)
    if packet is None:  # an OpOverloadPacket: torch.ops.quantized.add
        return f"{namespace}.{obj._qualified_op_name.split('::')[1]}"
    # an OpOverload: torch.ops.aten.add.Tensor
    return f"{_op_name(packet, namespace)}.{obj._overloadname}"


def _has_hidden_owner(qual: str) -> bool:
    owners = qual.split(".")[:-1]
    return any(p.startswith("_") or p == "<locals>" for p in owners)


def _owner_names(owner: type) -> list[str]:
    torch = sys.modules.get("torch")
    names = []
    # Tensor methods live on torch._C.TensorBase; users (and fx) know them as torch.Tensor.*.
    if torch is not None and issubclass(torch.Tensor, owner):
        names.append("torch.Tensor")
    names.append(qualified_name(owner, strict=False))
    return names


def _search_module(obj: Any, module_name: str) -> str | None:
    module = sys.modules.get(module_name)
    if not isinstance(module, types.ModuleType):
        return None
    hits = sorted(k for k, v in vars(module).items() if v is obj)
    hits.sort(key=lambda k: k.startswith("_"))  # public names first, stable otherwise
    for attr in hits:
        candidate = f"{module_name}.{attr}"
        if _resolves_to(candidate, obj):
            return candidate
    return None


def _resolves_to(candidate: str, obj: Any) -> bool:
    try:
        found = resolve_qualified_name(candidate)
    except QualifiedNameError:
        return False
    # Bound methods are re-created on every attribute access; equality compares self and func.
    return found is obj or (isinstance(found, types.MethodType) and found == obj)


def _tensor_method_name(obj: Any) -> str | None:
    torch = sys.modules.get("torch")
    name = getattr(obj, "__name__", None)
    if torch is None or not isinstance(name, str) or isinstance(obj, type):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return name if getattr(torch.Tensor, name, None) is obj else None


# --- resolving ------------------------------------------------------------------------------


def _import(module_name: str, full: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise QualifiedNameError(
            f"cannot resolve {full!r}: module {module_name!r} does not import ({e})"
        ) from e


def _step(obj: Any, parts: list[str], i: int, full: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated re-export modules warn on access
            return getattr(obj, parts[i])
    except AttributeError:
        pass
    except Exception as e:  # a module-level __getattr__ may raise anything
        raise QualifiedNameError(
            f"cannot resolve {full!r}: looking up {parts[i]!r} raised {e!r}"
        ) from e
    if isinstance(obj, types.ModuleType):
        # A submodule that is not imported yet (e.g. "xml.dom" after "import xml").
        submodule = ".".join(parts[: i + 1])
        try:
            return importlib.import_module(submodule)
        except ImportError as e:
            # Only "this very submodule does not exist" means "no such attribute"; any other
            # import failure is a real error inside the module and must not be masked.
            missing_itself = isinstance(e, ModuleNotFoundError) and submodule.startswith(
                e.name or "\0"
            )
            if not missing_itself:
                raise QualifiedNameError(
                    f"cannot resolve {full!r}: importing {submodule!r} failed ({e})"
                ) from e
    raise QualifiedNameError(
        f"cannot resolve {full!r}: {'.'.join(parts[:i])!r} has no attribute {parts[i]!r}"
    )


def _string_key(text: str) -> str:
    name = text.strip()
    if not name:
        raise QualifiedNameError("an object type string must not be empty")
    for prefix in _TENSOR_PREFIXES:
        if name.startswith(prefix) and "." not in name[len(prefix) :]:
            return name[len(prefix) :]
    if "." not in name:
        return name  # a Tensor method name, as torch.fx records call_method targets
    try:
        obj = resolve_qualified_name(name)
    except QualifiedNameError:
        return name
    if _is_nameable(obj):
        return object_type_key(obj)
    raise QualifiedNameError(
        f"object type {text!r} resolves to {type(obj).__name__} {_short_repr(obj)}, not a class or function"
    )


def _short_repr(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."

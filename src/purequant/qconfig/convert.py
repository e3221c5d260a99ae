"""`to_qconfig_spec`: every qconfig form users already have, to one QConfigSpec.

Accepted, without the user converting anything:

* None: nothing is quantized (or only the backend default, see `backend_default`);
* purequant's own `QConfigSpec` (returned as is) or `QConfig` (global);
* a torch.ao `QConfig` / `QConfigDynamic` (e.g. `float16_dynamic_qconfig`): global;
* a torch.ao `QConfigMapping`;
* the 1.7 qconfig dict `{"": qc, "object_type": [(type, qc)], "module_name_regex": [(regex, qc)],
  "module_name": [(name, qc)], "module_name_object_type_order": [(name, type, index, qc)]}`,
  where each level may also be a dict, and every qc may be None (leave float).

torch.ao is never imported here; torch.ao objects are recognised by shape and read in
`_torch_reader`, which imports it lazily.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from pyrsistent import pmap

from purequant.qconfig._torch_reader import (
    is_torch_qconfig,
    is_torch_qconfig_mapping,
    qconfig_from_torch,
)
from purequant.qconfig.errors import QConfigError, QualifiedNameError
from purequant.qconfig.names import object_type_key
from purequant.qconfig.spec import QConfig, QConfigSpec, compile_regex

DICT_KEYS = ("", "object_type", "module_name_regex", "module_name", "module_name_object_type_order")


def to_qconfig_spec(obj: Any, *, backend_default: str | QConfigSpec | None = None) -> QConfigSpec:
    """Convert any accepted qconfig form to a QConfigSpec.

    Args:
        obj: None, a QConfigSpec, a QConfig, a torch.ao QConfig/QConfigDynamic, a torch.ao
            QConfigMapping, or a 1.7-style qconfig dict (see the module docstring).
        backend_default: a base spec the user's entries are layered onto: a backend name
            ("x86", "fbgemm", "qnnpack", "onednn") or a QConfigSpec. The user's entries win
            over the base's at the same key; the base's global stays unless the user sets one.
            Regexes: the user's come first, so they win over the base's.

    Returns:
        The spec. A QConfigSpec without `backend_default` is returned as is.

    Raises:
        QConfigError: naming the offending entry and what to do.
    """
    user, sets_global = _convert(obj, _Memo())
    if backend_default is None:
        return user
    return layer(_base_spec(backend_default), user, replace_global=sets_global)


def layer(base: QConfigSpec, top: QConfigSpec, *, replace_global: bool = False) -> QConfigSpec:
    """Return `top`'s entries layered over `base`'s (top wins per key).

    Args:
        base: the spec whose entries apply where `top` says nothing.
        top: the spec whose entries win; its regexes are tried before the base's.
        replace_global: take `top`'s global even when it is None (an explicit "float");
            otherwise a None global in `top` keeps the base's.
    """
    regexes = dict(top.module_name_regex)
    regexes.update((r, q) for r, q in base.module_name_regex if r not in regexes)
    use_top = replace_global or top.global_qconfig is not None
    return QConfigSpec(
        global_qconfig=top.global_qconfig if use_top else base.global_qconfig,
        object_type=base.object_type.update(top.object_type),
        module_name_regex=tuple(regexes.items()),
        module_name=base.module_name.update(top.module_name),
        module_name_object_type_order=base.module_name_object_type_order.update(
            top.module_name_object_type_order
        ),
    )


# --- dispatch on the input form -----------------------------------------------------------------


class _Memo(dict):
    """Converted torch.ao qconfigs by id, so shared qconfigs are read (instantiated) once."""

    def qconfig(self, value: Any, where: str) -> QConfig | None:
        if value is None or isinstance(value, QConfig):
            return value
        if not is_torch_qconfig(value):
            raise QConfigError(
                f"{where}: expected a QConfig (purequant or torch.ao) or None, got "
                f"{type(value).__name__} {_short(value)}"
            )
        if id(value) not in self:
            self[id(value)] = (value, qconfig_from_torch(value, where=where))  # keep value alive
        return self[id(value)][1]


def _convert(obj: Any, memo: _Memo) -> tuple[QConfigSpec, bool]:
    """Return the spec and whether the input set a global qconfig explicitly."""
    if obj is None:
        return QConfigSpec(), False
    if isinstance(obj, QConfigSpec):
        return obj, obj.global_qconfig is not None
    spec_attr = getattr(obj, "spec", None)  # a CpuAwareDefault record
    if isinstance(spec_attr, QConfigSpec) and hasattr(obj, "reason"):
        return spec_attr, spec_attr.global_qconfig is not None
    if isinstance(obj, QConfig) or is_torch_qconfig(obj):
        return QConfigSpec(global_qconfig=memo.qconfig(obj, "global qconfig")), True
    if is_torch_qconfig_mapping(obj):
        return _from_mapping(obj, memo), obj.global_qconfig is not None
    if isinstance(obj, Mapping):
        return _from_dict(obj, memo), "" in obj
    raise QConfigError(
        f"cannot use {type(obj).__name__} {_short(obj)} as a qconfig; pass a QConfig, a "
        "QConfigMapping, a qconfig dict ({'': qconfig, 'object_type': [...], ...}), a "
        "QConfigSpec or None"
    )


def _from_mapping(mapping: Any, memo: _Memo) -> QConfigSpec:
    order = getattr(mapping, "module_name_object_type_order_qconfigs", {})
    return _from_dict(
        {
            "": mapping.global_qconfig,
            "object_type": list(mapping.object_type_qconfigs.items()),
            "module_name_regex": list(mapping.module_name_regex_qconfigs.items()),
            "module_name": list(mapping.module_name_qconfigs.items()),
            "module_name_object_type_order": [(*k, v) for k, v in order.items()],
        },
        memo,
        source="QConfigMapping",
    )


def _from_dict(d: Mapping, memo: _Memo, source: str = "qconfig_dict") -> QConfigSpec:
    for key in d:
        if key not in DICT_KEYS:
            raise QConfigError(_unknown_key_message(key, source))
    return QConfigSpec(
        global_qconfig=memo.qconfig(d.get(""), f"{source}['']"),
        object_type=pmap(_object_types(d, memo, source)),
        module_name_regex=tuple(_regexes(d, memo, source)),
        module_name=pmap(_module_names(d, memo, source)),
        module_name_object_type_order=pmap(_orders(d, memo, source)),
    )


# --- one reader per level -----------------------------------------------------------------------


def _object_types(d: Mapping, memo: _Memo, source: str) -> dict[str, QConfig | None]:
    out: dict[str, QConfig | None] = {}
    for where, (obj_type, qc) in _items(d, "object_type", 2, "(object type, qconfig)", source):
        out[_type_key(obj_type, where)] = memo.qconfig(qc, where)
    return out


def _regexes(d: Mapping, memo: _Memo, source: str) -> list[tuple[str, QConfig | None]]:
    out: dict[str, QConfig | None] = {}  # a repeated regex keeps its first place, as torch.ao
    for where, (regex, qc) in _items(d, "module_name_regex", 2, "(regex, qconfig)", source):
        if not isinstance(regex, str):
            raise QConfigError(
                f"{where}: a regex must be a string, got {type(regex).__name__} {regex!r}"
            )
        try:
            compile_regex(regex)
        except QConfigError as e:
            raise QConfigError(f"{where}: {e}") from e
        out[regex] = memo.qconfig(qc, where)
    return list(out.items())


def _module_names(d: Mapping, memo: _Memo, source: str) -> dict[str, QConfig | None]:
    out: dict[str, QConfig | None] = {}
    for where, (name, qc) in _items(d, "module_name", 2, "(module name, qconfig)", source):
        if not isinstance(name, str):
            raise QConfigError(
                f"{where}: a module name must be a string, got {type(name).__name__} {name!r}"
            )
        if name == "":
            raise QConfigError(
                f"{where}: module name '' never matches (the root has no name); use the '' key for a global qconfig"
            )
        out[name] = memo.qconfig(qc, where)
    return out


def _orders(d: Mapping, memo: _Memo, source: str) -> dict[tuple[str, str, int], QConfig | None]:
    out: dict[tuple[str, str, int], QConfig | None] = {}
    shape = "(module name, object type, index, qconfig)"
    for where, (name, obj_type, index, qc) in _items(
        d, "module_name_object_type_order", 4, shape, source
    ):
        if (
            not isinstance(name, str)
            or isinstance(index, bool)
            or not isinstance(index, int)
            or index < 0
        ):
            raise QConfigError(f"{where}: expected {shape} with a str name and an int index >= 0")
        out[(name, _type_key(obj_type, where), index)] = memo.qconfig(qc, where)
    return out


def _items(
    d: Mapping, key: str, arity: int, shape: str, source: str
) -> Iterable[tuple[str, tuple]]:
    """Yield (where, entry) for a level given as a list of tuples or as a dict."""
    value = d.get(key) or []
    if isinstance(value, Mapping):  # {type: qc} or {(name, type, index): qc}
        value = [(*k, v) if isinstance(k, tuple) else (k, v) for k, v in value.items()]
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise QConfigError(
            f"{source}[{key!r}] must be a list of {shape} tuples, got {type(value).__name__}"
        )
    for i, entry in enumerate(value):
        where = f"{source}[{key!r}][{i}]"
        if not isinstance(entry, tuple | list) or len(entry) != arity:
            got = (
                f"{type(entry).__name__} of {len(entry)} items"
                if isinstance(entry, tuple | list)
                else _short(entry)
            )
            raise QConfigError(f"{where}: expected a tuple {shape}, got {got}")
        yield where, tuple(entry)


def _type_key(obj_type: Any, where: str) -> str:
    try:
        return object_type_key(obj_type)
    except QualifiedNameError as e:
        raise QConfigError(f"{where}: {e}") from e


def _base_spec(backend_default: str | QConfigSpec) -> QConfigSpec:
    if isinstance(backend_default, QConfigSpec):
        return backend_default
    from purequant.qconfig.defaults import default_qconfig_spec

    return default_qconfig_spec(backend_default)


def _unknown_key_message(key: Any, source: str) -> str:
    close = difflib.get_close_matches(str(key), [k for k in DICT_KEYS if k], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"{source} has an unknown key {key!r}; {hint}valid keys are "
        f"{', '.join(repr(k) for k in DICT_KEYS)} ('' is the global qconfig)"
    )


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."

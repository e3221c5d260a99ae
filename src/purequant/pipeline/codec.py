"""Plain-data codec: records and the values they hold <-> JSON-able data, exactly.

`to_plain` turns a value into JSON-able data (None, bool, int, float, str, lists, dicts with str
keys); `from_plain` turns it back, so that `from_plain(to_plain(v)) == v` and the data survives
`json.dumps`/`json.loads` unchanged. Anything that JSON cannot say on its own carries a tag, a
dict with exactly one key starting with `$`:

    tuple           {"$tuple": [...]}
    PVector         {"$vector": [...]}
    PSet/frozenset  {"$set": [...]} / {"$frozenset": [...]}   (items sorted by their JSON)
    PMap            {"$map": {"k": ...}} when every key is a str, else {"$map": [[k, v], ...]}
    nan, inf, -inf  {"$float": "nan"}
    Ellipsis        {"$ellipsis": null}
    Enum member     {"$enum": "purequant.mod.Kind", "member": "RED"}
    attrs instance  {"$type": "purequant.observers.spec.ObserverSpec", "kind": ..., ...}
    Graph           {"$graph": "<text format>"}

Lists, dicts and sets are refused: records are immutable values. Any module-level class encodes;
on load, classes are imported by qualified name only from trusted packages (`purequant.`, plus
prefixes the caller passes as `trust`), checked before anything is imported: a dump is data, and
loading it must never import or run arbitrary code.
"""

from __future__ import annotations

import enum
import importlib
import json
import math
from collections.abc import Callable
from typing import Any

import attrs
from pyrsistent import PMap, PSet, PVector, pmap, pset, pvector

from ..errors import PurequantError
from ..ir import Graph, parse_graph, print_graph

TRUSTED = ("purequant.",)
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class CodecError(PurequantError):
    """A value cannot be encoded as plain data, or plain data cannot be decoded."""


# ------------------------------------------------------------------ encoding
def to_plain(value: Any) -> Any:
    """Encode `value` as JSON-able plain data (see the module docstring). O(size of value).

    Raises:
        CodecError: a mutable container, a tensor, a callable, or a class defined in a function.
    """
    t = type(value)
    if value is None or t in (bool, int, str):
        return value
    if t is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if t is tuple:
        return {"$tuple": [to_plain(v) for v in value]}
    if value is Ellipsis:
        return {"$ellipsis": None}
    encode = _ENCODERS.get(_kind(value))
    if encode is None:
        raise CodecError(
            f"cannot encode a {t.__module__}.{t.__qualname__} as plain data",
            hint="records hold only plain immutable values: numbers, str, tuples, pyrsistent "
            "maps/vectors/sets, enums and frozen attrs classes from purequant",
        )
    return encode(value)


def _kind(value: Any) -> str | None:
    if isinstance(value, PMap):
        return "map"
    if isinstance(value, PVector):
        return "vector"
    if isinstance(value, PSet):
        return "set"
    if type(value) is frozenset:
        return "frozenset"
    if isinstance(value, Graph):
        return "graph"
    if isinstance(value, enum.Enum):
        return "enum"
    if attrs.has(type(value)):
        return "attrs"
    return None


def _sorted_items(items: Any) -> list:
    # Sets have no order of their own; sort by the JSON text so the output is deterministic.
    return sorted((to_plain(v) for v in items), key=_json_key)


def _json_key(plain: Any) -> str:
    return json.dumps(plain, sort_keys=True)


def _encode_map(value: PMap) -> dict:
    if all(type(k) is str for k in value):
        return {"$map": {k: to_plain(v) for k, v in sorted(value.items())}}
    pairs = [[to_plain(k), to_plain(v)] for k, v in value.items()]
    return {"$map": sorted(pairs, key=lambda kv: _json_key(kv[0]))}


def _encode_attrs(value: Any) -> dict:
    out = {"$type": _class_name(type(value))}
    for f in attrs.fields(type(value)):
        if f.init:
            out[f.name] = to_plain(getattr(value, f.name))
    return out


def _class_name(cls: type) -> str:
    name = f"{cls.__module__}.{cls.__qualname__}"
    if "<" in name:
        raise CodecError(
            f"cannot encode an instance of {name}: a class defined inside a function cannot "
            "be imported back by name",
            hint="define record classes at module level",
        )
    return name


_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "map": _encode_map,
    "vector": lambda v: {"$vector": [to_plain(x) for x in v]},
    "set": lambda v: {"$set": _sorted_items(v)},
    "frozenset": lambda v: {"$frozenset": _sorted_items(v)},
    "graph": lambda g: {"$graph": print_graph(g)},
    "enum": lambda e: {"$enum": _class_name(type(e)), "member": e.name},
    "attrs": _encode_attrs,
}


# ------------------------------------------------------------------ decoding
def from_plain(data: Any, *, trust: tuple[str, ...] = ()) -> Any:
    """Decode plain data made by `to_plain`. O(size of data).

    Args:
        data: JSON-able data, as returned by `to_plain` or `json.loads`.
        trust: package prefixes (`"mypkg."`) classes may be imported from besides purequant.

    Raises:
        CodecError: an unknown tag, a malformed tag, or a class outside purequant and `trust`.
    """
    t = type(data)
    if data is None or t in (bool, int, float, str):
        return data
    if t is list:
        raise CodecError("bare JSON list in plain data: sequences are tagged $tuple or $vector")
    if t is not dict:
        raise CodecError(f"{t.__name__} is not plain data")
    if "$type" in data:
        return _decode_attrs(data, trust)
    if "$enum" in data:
        return _decode_enum(data, trust)
    if len(data) != 1:
        raise CodecError(f"expected a one-key tag such as {{'$tuple': [...]}}, got keys {sorted(data)}")
    (tag, body), = data.items()
    decode = _DECODERS.get(tag)
    if decode is None:
        raise CodecError(f"unknown tag {tag!r} in plain data")
    return decode(body, trust)


def _decode_map(body: Any, trust: tuple[str, ...]) -> PMap:
    if type(body) is dict:
        return pmap({k: from_plain(v, trust=trust) for k, v in body.items()})
    return pmap({from_plain(k, trust=trust): from_plain(v, trust=trust) for k, v in body})


def _decode_enum(data: dict, trust: tuple[str, ...]) -> enum.Enum:
    cls = _load_class(data["$enum"], trust)
    try:
        return cls[data["member"]]
    except (KeyError, TypeError):
        raise CodecError(f"{data['$enum']} has no member {data.get('member')!r}") from None


def _decode_float(body: Any, trust: tuple[str, ...]) -> float:
    if body not in _FLOATS:
        raise CodecError(f"$float holds {body!r}; expected one of {sorted(_FLOATS)}")
    return _FLOATS[body]


def _decode_attrs(data: dict, trust: tuple[str, ...]) -> Any:
    cls = _load_class(data["$type"], trust)
    if not attrs.has(cls):
        raise CodecError(f"{data['$type']} is not an attrs class")
    by_name = {f.name: f for f in attrs.fields(cls)}
    kwargs = {}
    for name, plain in data.items():
        if name == "$type":
            continue
        f = by_name.get(name)
        if f is None or not f.init:
            raise CodecError(f"{data['$type']} has no field {name!r}")
        kwargs[f.alias or name] = from_plain(plain, trust=trust)
    return cls(**kwargs)


def _load_class(name: str, trust: tuple[str, ...]) -> type:
    obj = load_qualified(name, trust=trust)
    if not isinstance(obj, type):
        raise CodecError(f"{name} is not a class")
    return obj


def load_qualified(name: str, *, trust: tuple[str, ...] = ()) -> Any:
    """Import the module-level object called `name` (`pkg.mod.Class`), from trusted packages only.

    The prefix is checked before anything is imported (importing runs a module's code), and the
    object found must itself be defined in a trusted package (no re-exported foreign objects).

    Raises:
        CodecError: `name` is outside purequant and `trust`, or does not name an object.
    """
    trusted = TRUSTED + tuple(trust)
    if type(name) is not str or not name.startswith(trusted):
        raise CodecError(
            f"refusing to load {name!r}: only names under {', '.join(trusted)} are loaded",
            hint="a dump is data; pass trust=('yourpkg.',) to allow a package you trust",
        )
    obj = _import_longest(name)
    module = getattr(obj, "__module__", None) or ""
    if not (module + ".").startswith(trusted):
        raise CodecError(f"refusing to load {name!r}: it is defined in {module!r}")
    return obj


def _import_longest(name: str) -> Any:
    parts = name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr, None)
        if obj is not None:
            return obj
    raise CodecError(f"cannot import {name!r}")


_DECODERS: dict[str, Callable[[Any, tuple[str, ...]], Any]] = {
    "$tuple": lambda b, tr: tuple(from_plain(v, trust=tr) for v in b),
    "$vector": lambda b, tr: pvector(from_plain(v, trust=tr) for v in b),
    "$set": lambda b, tr: pset(from_plain(v, trust=tr) for v in b),
    "$frozenset": lambda b, tr: frozenset(from_plain(v, trust=tr) for v in b),
    "$map": _decode_map,
    "$float": _decode_float,
    "$ellipsis": lambda b, tr: Ellipsis,
    "$graph": lambda b, tr: parse_graph(b),
}


def dumps(value: Any) -> str:
    """`value` as JSON text (sorted keys, indented, newline-terminated): stable to diff."""
    return json.dumps(to_plain(value), indent=1, sort_keys=True) + "\n"


def loads(text: str, *, trust: tuple[str, ...] = ()) -> Any:
    """Inverse of `dumps`."""
    return from_plain(json.loads(text), trust=trust)

"""QConfig and QConfigSpec: what to quantize and how, as frozen plain data.

A `QConfig` pairs an activation `ObserverSpec` with a weight `ObserverSpec` (either may be None:
not quantized). A `QConfigSpec` is purequant's qconfig mapping: a global qconfig and four levels
of more specific entries, keyed by strings only (object types are canonical qualified names, see
`purequant.qconfig.names`), so a spec is hashable, comparable and round-trips through JSON.

Precedence, lowest first (each level overrides the ones before it):

    global < object_type < module_name_regex < module_name < module_name_object_type_order

A `None` value in an entry is meaningful: it leaves the matched ops in float.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from attrs import evolve, field, frozen
from attrs.validators import instance_of, optional
from pyrsistent import PMap, pmap

from purequant.ir.node import as_pmap
from purequant.observers.spec import ObserverSpec
from purequant.qconfig.errors import QConfigError
from purequant.qconfig.names import object_type_key

# Levels in increasing precedence; "none" is the level of a decision nothing matched.
LEVELS = (
    "global",
    "object_type",
    "module_name_regex",
    "module_name",
    "module_name_object_type_order",
)


@frozen
class QConfig:
    """How to quantize one op: an activation spec and a weight spec.

    Attributes:
        activation: observer spec for the op's output activation (None: left float).
        weight: observer spec for the op's weight (None: left float).
        name: label used in messages and decision logs only; outside equality and hashing.
        narrow_16bit_inputs: `activation` has no reduce_range, but the op's activation inputs
            keep it when the backend runs the op on a kernel that accumulates in 16 bits
            (fbgemm's depthwise conv). Set by the CPU-aware default; `find_quants` applies it.
    """

    activation: ObserverSpec | None = field(
        default=None, validator=optional(instance_of(ObserverSpec))
    )
    weight: ObserverSpec | None = field(default=None, validator=optional(instance_of(ObserverSpec)))
    name: str | None = field(default=None, eq=False)
    narrow_16bit_inputs: bool = False

    @property
    def is_dynamic(self) -> bool:
        """True when activations are quantized at run time (dynamic quantization)."""
        return self.activation is not None and self.activation.is_dynamic

    @property
    def activation_dtype(self) -> str:
        """The activation dtype name; "float32" when activations are not quantized."""
        return self.activation.dtype if self.activation is not None else "float32"

    @property
    def weight_dtype(self) -> str:
        """The weight dtype name; "float32" when weights are not quantized."""
        return self.weight.dtype if self.weight is not None else "float32"

    def describe(self) -> str:
        """One short line for messages: the name if any, else a summary of both specs."""
        if self.name:
            return self.name
        narrow = ", narrow_16bit_inputs" if self.narrow_16bit_inputs else ""
        return f"QConfig(activation={_describe_spec(self.activation)}, weight={_describe_spec(self.weight)}{narrow})"

    def to_json(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "activation": None if self.activation is None else self.activation.to_json(),
            "weight": None if self.weight is None else self.weight.to_json(),
        }
        if self.narrow_16bit_inputs:  # only when set: JSON of every other qconfig is unchanged
            out["narrow_16bit_inputs"] = True
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QConfig:
        def spec(d: dict[str, Any] | None) -> ObserverSpec | None:
            return None if d is None else ObserverSpec.from_json(d)

        return cls(
            spec(data.get("activation")), spec(data.get("weight")), data.get("name"),
            bool(data.get("narrow_16bit_inputs", False)),
        )


def describe_qconfig(qconfig: QConfig | None) -> str:
    """Describe a qconfig for a message; None reads as "None (left float)"."""
    return "None (left float)" if qconfig is None else qconfig.describe()


def _describe_spec(spec: ObserverSpec | None) -> str:
    if spec is None:
        return "None"
    flags = [spec.kind, spec.dtype, spec.qscheme]
    if spec.reduce_range:
        flags.append("reduce_range")
    if spec.is_dynamic:
        flags.append("dynamic")
    return " ".join(flags)



def _to_pairs(value: Any) -> tuple:
    # Regex lists are short; normalising them on every evolve costs nothing measurable.
    return tuple(p if isinstance(p, tuple) else tuple(p) for p in value)


OrderKey = tuple[str, str, int]


@frozen
class QConfigSpec:
    """purequant's qconfig mapping: immutable, string-keyed, JSON-serialisable.

    Build one with `to_qconfig_spec` (from any torch.ao form) or with the `set_*` methods, each
    of which returns a new spec. Entries of `object_type`, `module_name` and
    `module_name_object_type_order` are unordered maps; `module_name_regex` is a tuple because
    the first registered regex that matches wins.

    Attributes:
        global_qconfig: the qconfig of everything no entry matches (None: left float).
        object_type: canonical object-type key (`torch.nn.Linear`, `torch.add`, `reshape`)
            -> qconfig.
        module_name_regex: (regex, qconfig) pairs in registration order; matched with
            `re.match` (anchored at the start only), like torch.ao.
        module_name: module path -> qconfig; an entry covers the module's children too.
        module_name_object_type_order: (module path, object-type key, call index) -> qconfig.
    """

    global_qconfig: QConfig | None = field(default=None, validator=optional(instance_of(QConfig)))
    object_type: PMap = field(factory=pmap, converter=as_pmap)
    module_name_regex: tuple[tuple[str, QConfig | None], ...] = field(
        default=(), converter=_to_pairs
    )
    module_name: PMap = field(factory=pmap, converter=as_pmap)
    module_name_object_type_order: PMap = field(factory=pmap, converter=as_pmap)

    def __attrs_post_init__(self) -> None:
        _check_entries(self)

    # --- building: every method returns a new spec ---

    def set_global(self, qconfig: QConfig | None) -> QConfigSpec:
        """Return a copy whose global qconfig is `qconfig`."""
        return evolve(self, global_qconfig=qconfig)

    def set_object_type(self, object_type: Any, qconfig: QConfig | None) -> QConfigSpec:
        """Return a copy with an entry for a module class, function or method name."""
        return evolve(self, object_type=self.object_type.set(object_type_key(object_type), qconfig))

    def set_module_name_regex(self, regex: str, qconfig: QConfig | None) -> QConfigSpec:
        """Return a copy with a regex entry; re-setting a regex keeps its registration place."""
        pairs = list(self.module_name_regex)
        known = [r for r, _ in pairs]
        if regex in known:
            pairs[known.index(regex)] = (regex, qconfig)
        else:
            pairs.append((regex, qconfig))
        return evolve(self, module_name_regex=tuple(pairs))

    def set_module_name(self, module_name: str, qconfig: QConfig | None) -> QConfigSpec:
        """Return a copy with an entry for a module path (it covers the module's children)."""
        return evolve(self, module_name=self.module_name.set(module_name, qconfig))

    def set_module_name_object_type_order(
        self, module_name: str, object_type: Any, index: int, qconfig: QConfig | None
    ) -> QConfigSpec:
        """Return a copy with an entry for the `index`-th call of `object_type` in a module."""
        key = (module_name, object_type_key(object_type), index)
        return evolve(
            self, module_name_object_type_order=self.module_name_object_type_order.set(key, qconfig)
        )

    def map_qconfigs(self, fn: Callable[[QConfig], QConfig]) -> QConfigSpec:
        """Return a copy with `fn` applied to every non-None qconfig (global and entries)."""

        def f(qc: QConfig | None) -> QConfig | None:
            return None if qc is None else fn(qc)

        return QConfigSpec(
            global_qconfig=f(self.global_qconfig),
            object_type=pmap({k: f(v) for k, v in self.object_type.items()}),
            module_name_regex=tuple((r, f(v)) for r, v in self.module_name_regex),
            module_name=pmap({k: f(v) for k, v in self.module_name.items()}),
            module_name_object_type_order=pmap(
                {k: f(v) for k, v in self.module_name_object_type_order.items()}
            ),
        )

    # --- reading ---

    def entries(self) -> tuple[tuple[str, Any, QConfig | None], ...]:
        """All entries as (level, key, qconfig), by level then key (regexes in their order)."""
        out: list[tuple[str, Any, QConfig | None]] = []
        if self.global_qconfig is not None:
            out.append(("global", "", self.global_qconfig))
        out += [("object_type", k, self.object_type[k]) for k in sorted(self.object_type)]
        out += [("module_name_regex", r, qc) for r, qc in self.module_name_regex]
        out += [("module_name", k, self.module_name[k]) for k in sorted(self.module_name)]
        order = self.module_name_object_type_order
        out += [("module_name_object_type_order", k, order[k]) for k in sorted(order)]
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; keys sorted so equal specs give equal JSON."""

        def qc(q: QConfig | None) -> dict[str, Any] | None:
            return None if q is None else q.to_json()

        order = self.module_name_object_type_order
        return {
            "global": qc(self.global_qconfig),
            "object_type": [[k, qc(self.object_type[k])] for k in sorted(self.object_type)],
            "module_name_regex": [[r, qc(q)] for r, q in self.module_name_regex],
            "module_name": [[k, qc(self.module_name[k])] for k in sorted(self.module_name)],
            "module_name_object_type_order": [[*k, qc(order[k])] for k in sorted(order)],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QConfigSpec:
        def qc(d: dict[str, Any] | None) -> QConfig | None:
            return None if d is None else QConfig.from_json(d)

        return cls(
            global_qconfig=qc(data.get("global")),
            object_type=pmap({k: qc(v) for k, v in data.get("object_type", [])}),
            module_name_regex=tuple((r, qc(v)) for r, v in data.get("module_name_regex", [])),
            module_name=pmap({k: qc(v) for k, v in data.get("module_name", [])}),
            module_name_object_type_order=pmap(
                {
                    (n, t, int(i)): qc(v)
                    for n, t, i, v in data.get("module_name_object_type_order", [])
                }
            ),
        )

    def __str__(self) -> str:
        lines = ["QConfigSpec("]
        lines += [f"  {level} {key!r}: {describe_qconfig(q)}" for level, key, q in self.entries()]
        return "\n".join(lines) + ("\n)" if len(lines) > 1 else ")")


# --- validation ---------------------------------------------------------------------------------


def _check_entries(spec: QConfigSpec) -> None:
    for key, qc in spec.object_type.items():
        _check_str(key, "object_type key")
        _check_qconfig(qc, f"object_type {key!r}")
    seen: set[str] = set()
    for pair in spec.module_name_regex:
        if len(pair) != 2:
            raise QConfigError(
                f"module_name_regex entries are (regex, qconfig) pairs; got {pair!r}"
            )
        regex, qc = pair
        _check_str(regex, "module_name_regex")
        compile_regex(regex)
        if regex in seen:
            raise QConfigError(f"module_name_regex {regex!r} is registered twice; keep one entry")
        seen.add(regex)
        _check_qconfig(qc, f"module_name_regex {regex!r}")
    for name, qc in spec.module_name.items():
        _check_module_name(name)
        _check_qconfig(qc, f"module_name {name!r}")
    for key, qc in spec.module_name_object_type_order.items():
        _check_order_key(key)
        _check_qconfig(qc, f"module_name_object_type_order {key!r}")


def compile_regex(regex: str) -> re.Pattern:
    """Compile a module-name regex, raising QConfigError that names it when it is invalid."""
    try:
        return re.compile(regex)
    except re.error as e:
        raise QConfigError(
            f"module_name_regex {regex!r} does not compile: {e}. Escape literal dots and "
            "brackets (e.g. 'features\\.0\\..*'), or use a module_name entry for an exact path"
        ) from e


def _check_str(value: Any, what: str) -> None:
    if not isinstance(value, str):
        raise QConfigError(f"{what} must be a string; got {type(value).__name__} {value!r}")


def _check_module_name(name: Any) -> None:
    _check_str(name, "module_name")
    if name == "":
        # torch.ao silently ignores it; say so instead, since the user meant "everything".
        raise QConfigError(
            "module_name '' never matches (the root has no name); set the global qconfig instead "
            "(the '' key of a qconfig dict, or QConfigSpec.set_global)"
        )


def _check_order_key(key: Any) -> None:
    ok = (
        isinstance(key, tuple)
        and len(key) == 3
        and isinstance(key[0], str)
        and isinstance(key[1], str)
        and isinstance(key[2], int)
        and not isinstance(key[2], bool)
        and key[2] >= 0
    )
    if not ok:
        raise QConfigError(
            "module_name_object_type_order keys are (module_name: str, object_type_key: str, "
            f"index: int >= 0); got {key!r}"
        )


def _check_qconfig(qc: Any, where: str) -> None:
    if qc is not None and not isinstance(qc, QConfig):
        raise QConfigError(
            f"{where}: expected a purequant QConfig or None, got {type(qc).__name__}; "
            "build specs from torch.ao objects with to_qconfig_spec()"
        )

"""Resolution: which qconfig applies to one op, which level decided, and why.

`resolve` is pure and total: it reads a `QConfigSpec` and the op's coordinates (module path,
object-type key, call index) and returns a `Decision`. The decision log that
`prepared.explain(node)` shows is made of these.

The rule follows torch.ao 2.13 (`fx/qconfig_mapping_utils.py`), where each level overrides the
ones before it when it has a matching entry, *including an entry whose value is None*:

1. global;
2. object_type: the op's own type, then the type of the module the op is called in (a function
   called inside `MyBlock` takes `MyBlock`'s object-type entry over its own);
3. module_name_regex: the first registered regex with `re.match(regex, module_path)` (anchored
   at the start only: `"conv"` matches `"conv1"` and `"conv.sub"`);
4. module_name: the module path or its nearest ancestor with an entry (`a.b` covers `a.b.c`);
5. module_name_object_type_order: (path the call is counted in, object type, index).
"""

from __future__ import annotations

from typing import Any

from attrs import field, frozen

from purequant.qconfig.spec import QConfig, QConfigSpec, compile_regex, describe_qconfig


@frozen
class Decision:
    """The qconfig chosen for one op and where it came from.

    Attributes:
        qconfig: the resulting qconfig; None leaves the op in float.
        level: the level that decided: one of `spec.LEVELS`, or "none" when nothing matched and
            there is no global qconfig.
        entry: the key that decided: "" for global, an object-type key, a regex, a module path,
            or a (module path, object type, index) tuple; None for level "none".
        reason: one line for humans.
        shadowed: (level, entry) of the lower-precedence matches this decision overrode.
    """

    qconfig: QConfig | None
    level: str
    entry: Any
    reason: str
    shadowed: tuple[tuple[str, Any], ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "qconfig": None if self.qconfig is None else self.qconfig.to_json(),
            "level": self.level,
            "entry": list(self.entry) if isinstance(self.entry, tuple) else self.entry,
            "reason": self.reason,
            "shadowed": [[lv, list(e) if isinstance(e, tuple) else e] for lv, e in self.shadowed],
        }


@frozen
class _Match:
    level: str
    entry: Any
    qconfig: QConfig | None
    why: str


def resolve(
    spec: QConfigSpec,
    *,
    module_path: str,
    object_type: str,
    type_order_index: int | None = None,
    scope_type: str | None = None,
    order_path: str | None = None,
) -> Decision:
    """Decide the qconfig of one op.

    Args:
        spec: the qconfig mapping.
        module_path: path of the module the op belongs to ("" for the root); regex and
            module_name entries are matched against it.
        object_type: the op's object-type key (see `names.object_type_key`): the module class of
            a call_module, the function of a call_function, the method name of a call_method.
        type_order_index: how many calls of `object_type` came before this one in `order_path`;
            None skips the module_name_object_type_order level.
        scope_type: object-type key of the module the op is called in (functions and methods);
            its object_type entry beats the op's own.
        order_path: module path the call index counts in; defaults to `module_path`.

    Returns:
        The Decision; its `shadowed` lists the lower matches it overrode.
    """
    matches = [
        m
        for m in (
            _global(spec),
            _by_type(spec, object_type, "object type"),
            _by_type(spec, scope_type, "enclosing module type"),
            _by_regex(spec, module_path),
            _by_name(spec, module_path),
            _by_order(
                spec,
                order_path if order_path is not None else module_path,
                object_type,
                type_order_index,
            ),
        )
        if m is not None
    ]
    if not matches:
        return Decision(
            None, "none", None, "no entry matches and there is no global qconfig: left float"
        )
    win = matches[-1]
    reason = f"{win.why} -> {describe_qconfig(win.qconfig)}"
    return Decision(
        win.qconfig, win.level, win.entry, reason, tuple((m.level, m.entry) for m in matches[:-1])
    )


def resolve_module(
    spec: QConfigSpec, *, module_path: str, module_type: str, type_order_index: int | None = None
) -> Decision:
    """Decide the qconfig of a call_module op, as torch.ao does.

    The module's own path is matched by regex and module_name entries, while its call index
    counts among calls of `module_type` in the *parent* module (torch.ao counts invocations in
    the module that makes them).
    """
    parent = module_path.rpartition(".")[0]
    return resolve(
        spec,
        module_path=module_path,
        object_type=module_type,
        type_order_index=type_order_index,
        order_path=parent,
    )


def resolve_function(
    spec: QConfigSpec,
    *,
    scope_path: str,
    scope_type: str,
    function: str,
    type_order_index: int | None = None,
) -> Decision:
    """Decide the qconfig of a call_function op called inside module `scope_path`."""
    return resolve(
        spec,
        module_path=scope_path,
        object_type=function,
        type_order_index=type_order_index,
        scope_type=scope_type,
    )


def resolve_method(spec: QConfigSpec, *, scope_path: str, scope_type: str, method: str) -> Decision:
    """Decide the qconfig of a call_method op; torch.ao has no call-order entries for methods."""
    return resolve(spec, module_path=scope_path, object_type=method, scope_type=scope_type)


# --- one small rule per level -------------------------------------------------------------------


def _global(spec: QConfigSpec) -> _Match | None:
    if spec.global_qconfig is None:
        return None
    return _Match(
        "global", "", spec.global_qconfig, "no more specific entry matches; global qconfig"
    )


def _by_type(spec: QConfigSpec, key: str | None, what: str) -> _Match | None:
    if key is None:
        return None
    try:  # one PMap probe instead of `in` then `[]` (an entry's value may be None)
        qc = spec.object_type[key]
    except KeyError:
        return None
    return _Match("object_type", key, qc, f"{what} {key} has an object_type entry")


def _by_regex(spec: QConfigSpec, module_path: str) -> _Match | None:
    for regex, qc in spec.module_name_regex:
        if compile_regex(regex).match(module_path):
            why = f"module path {module_path!r} matches regex {regex!r} (first registered match)"
            return _Match("module_name_regex", regex, qc, why)
    return None


def _by_name(spec: QConfigSpec, module_path: str) -> _Match | None:
    if not spec.module_name:  # the usual case; each lookup below is a pure-Python PMap probe
        return None
    path = module_path
    while path:  # the root ("") never matches a module_name entry, as in torch.ao
        if path in spec.module_name:
            how = "has" if path == module_path else f"covers {module_path!r} and has"
            return _Match(
                "module_name",
                path,
                spec.module_name[path],
                f"module {path!r} {how} a module_name entry",
            )
        path = path.rpartition(".")[0]
    return None


def _by_order(spec: QConfigSpec, path: str, object_type: str, index: int | None) -> _Match | None:
    if index is None or not spec.module_name_object_type_order:
        return None
    key = (path, object_type, index)
    if key not in spec.module_name_object_type_order:
        return None
    why = f"call #{index} of {object_type} in module {path!r} has a module_name_object_type_order entry"
    return _Match(
        "module_name_object_type_order", key, spec.module_name_object_type_order[key], why
    )

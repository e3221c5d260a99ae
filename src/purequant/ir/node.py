"""Nodes and the plain values their arguments are made of.

A node's arguments are plain immutable data: None, bool, int, float, str, Ellipsis, `Ref` (an
edge to another node), `Sym` (a named constant such as `torch.float32`, resolved to a Python
object only at the torch.fx boundary), `Slice`, tuples, `PVector` (a Python list in the traced
code) and `PMap` (a dict). Nothing callable and no tensors, so graphs print, parse, hash and
serialise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from attrs import field, frozen
from pyrsistent import PMap, PVector, pmap, pvector

OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")
_OPS = frozenset(OPS)
ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@frozen(slots=True)
class Ref:
    """An edge: the value produced by node `id`."""

    id: str


@frozen(slots=True)
class Sym:
    """A named constant (`torch.float32`, `torch.contiguous_format`), resolved in the shell."""

    name: str


@frozen(slots=True)
class Slice:
    """A slice in an argument (Python's own slice is unhashable before 3.12)."""

    start: Any = None
    stop: Any = None
    step: Any = None


def as_pmap(value: Any) -> PMap:
    """`value` as a PMap, converting only when it is not one already (an attrs converter).

    The one converter every frozen record uses: pmap() on an existing PMap rebuilds it, and
    evolve reruns converters, so an unconditional converter would make every edit O(size).
    """
    # Convert only when needed: pmap() on an existing PMap rebuilds it, and evolve reruns
    # converters, so an unconditional converter would make every edit O(size of the map).
    return value if isinstance(value, PMap) else pmap(value)


def _to_args(value: Any) -> tuple:
    return value if type(value) is tuple else tuple(value)


@frozen(slots=True)
class Node:
    """One operation of a graph.

    Attributes:
        id: unique, deterministic, identifier-like name (fx-style: `conv1`, `add_3`).
        op: one of OPS.
        target: qualified-name string: a module path for call_module, an attribute path for
            get_attr, a method name for call_method, a function's qualified name for
            call_function (`torch.nn.functional.relu`, `operator.add`), the argument name for
            placeholder, `output` for output.
        args: positional arguments (plain values, `Ref` for edges).
        kwargs: keyword arguments, a persistent map.
        meta: provenance (module scope, source line, the stage that made the node, module
            type); kept on the node but outside equality and hashing.
    """

    id: str
    op: str
    target: str
    args: tuple = field(default=(), converter=_to_args)
    kwargs: PMap = field(factory=pmap, converter=as_pmap)
    meta: PMap = field(factory=pmap, converter=as_pmap, eq=False, hash=False)
    # Derived once at construction: every index update and check reads it, and a node is
    # immutable, so computing it per query would only repeat work.
    _inputs: tuple = field(init=False, eq=False, hash=False, repr=False)
    # The node's line in the text format without provenance, filled in by `digest` on first
    # use. Most nodes of a stage's output are the very node objects of its input (persistent
    # structure), so remembering the line makes digesting the output O(new nodes) formatting.
    _line: str | None = field(default=None, init=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        out: list[str] = []
        _collect(self.args, out)
        if self.kwargs:
            _collect(tuple(self.kwargs[k] for k in sorted(self.kwargs)), out)
        object.__setattr__(self, "_inputs", tuple(dict.fromkeys(out)) if len(out) > 1 else tuple(out))

    def refs(self) -> Iterator[str]:
        """Ids this node reads, in argument order, with repeats."""
        yield from iter_refs(self.args)
        yield from iter_refs(tuple(self.kwargs[k] for k in sorted(self.kwargs)))

    def input_ids(self) -> tuple[str, ...]:
        """Distinct ids this node reads, in first-use order. O(1): computed at construction."""
        return self._inputs

    def map_refs(self, fn: Callable[[str], Any]) -> Node:
        """A copy with every `Ref(i)` replaced by `fn(i)` (a Ref or any plain value)."""
        args = map_value(self.args, fn)
        kwargs = pmap({k: map_value(v, fn) for k, v in self.kwargs.items()}) if self.kwargs else self.kwargs
        if args == self.args and kwargs == self.kwargs:
            return self
        return Node(self.id, self.op, self.target, args, kwargs, self.meta)

    def with_meta(self, **entries: Any) -> Node:
        node = Node(self.id, self.op, self.target, self.args, self.kwargs, self.meta.update(entries))
        object.__setattr__(node, "_line", self._line)  # the remembered line leaves meta out
        return node


def _collect(value: tuple, out: list[str]) -> None:
    # A loop, not a generator: this runs for every node ever built, and nesting is shallow.
    for item in value:
        t = type(item)
        if t is Ref:
            out.append(item.id)
        elif t is tuple or isinstance(item, PVector):
            _collect(tuple(item), out)
        elif isinstance(item, PMap):
            _collect(tuple(item[k] for k in sorted(item, key=repr)), out)
        elif t is Slice:
            _collect((item.start, item.stop, item.step), out)


def iter_refs(value: Any) -> Iterator[str]:
    """Every Ref id inside a plain value, depth first, in order."""
    if type(value) is Ref:
        yield value.id
    elif isinstance(value, (tuple, PVector)):
        for item in value:
            yield from iter_refs(item)
    elif isinstance(value, PMap):
        for key in sorted(value, key=repr):
            yield from iter_refs(value[key])
    elif type(value) is Slice:
        yield from iter_refs((value.start, value.stop, value.step))


def map_value(value: Any, fn: Callable[[str], Any]) -> Any:
    """Rebuild a plain value with each Ref(i) replaced by fn(i)."""
    if type(value) is Ref:
        return fn(value.id)
    if type(value) is tuple:
        return tuple(map_value(item, fn) for item in value)
    if isinstance(value, PVector):
        return pvector(map_value(item, fn) for item in value)
    if isinstance(value, PMap):
        return pmap({k: map_value(v, fn) for k, v in value.items()})
    if type(value) is Slice:
        return Slice(map_value(value.start, fn), map_value(value.stop, fn), map_value(value.step, fn))
    return value


def is_valid_op(op: str) -> bool:
    return op in _OPS

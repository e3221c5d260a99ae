"""The lowering sweep: one pass over the observed graph, a rule per matched pattern.

Like jaxpr's `eval_jaxpr`, the sweep keeps an environment from old value ids to where each
value lives in the new graph, in up to two forms: `float_of[id]` (a float tensor, or any
non-tensor value) and `quant_of[id]` (a quantized value: a `QVal`). Readers ask for the form
they need; a float reader of a quantized value gets one dequantize node, made once and shared.

* An activation observer becomes the point where its value is quantized: a quantize node that
  keeps the observer's id, or nothing at all when the value already is quantized with those
  qparams (so no dequantize -> quantize round trip is ever emitted).
* A match's root calls its handler's rule, which emits the quantized ops and returns the
  output's new form. A rule that cannot lower raises `CannotLower(reason)`; the nodes it had
  emitted are dropped (emission is transactional per node of the old graph) and the matched
  nodes are copied as float ops reading dequantized inputs. The reason goes to the record.
* Everything else is copied, reading float inputs; the output reads float values.

`Sweep` is a transient, like `GraphBuilder`: made and finished inside `lower`, never escaping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from attrs import frozen
from pyrsistent import pmap

from ..backends import Backend
from ..errors import StageError
from ..ir import Graph, Node, Ref, map_value
from ..ir.names import sanitize
from ..observers import QParams
from .record import LoweredMatch, LoweringNote, LoweringSkip

OBSERVE = "purequant.observe"
NEW_PARAMS = "_qparams"  # new params live under one prefix, never inside a user's module path
_KEEP_META = ("src", "scope", "scope_type", "stack")


@frozen
class QVal:
    """A quantized value in the new graph: its node and its qparams (None: known at run time)."""

    ref: Ref
    qp: QParams | None


class CannotLower(Exception):
    """Raised by a rule (before it is done) to leave its match in float; `reason` is recorded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def static_activation(qp: QParams | None) -> bool:
    """qparams a quantize node can use for an activation: per-tensor int8."""
    return qp is not None and qp.dtype in ("quint8", "qint8") and qp.qscheme.startswith("per_tensor")


class Sweep:
    """The transient state of one lowering pass (see the module docstring)."""

    def __init__(self, graph: Graph, params: Mapping, modules: Mapping, matches: Any, insertion: Any,
                 qparams: Mapping[str, QParams], dialect: Any, backend: Backend) -> None:
        self.old, self.params, self.modules = graph, params, modules
        self.insertion, self.qparams = insertion, qparams
        self.matches = matches.matches
        self.dialect, self.backend = dialect, backend
        self.b = graph.builder()
        self.float_of: dict[str, Any] = {}
        self.quant_of: dict[str, QVal] = {}
        self.attr_of: dict[str, Ref] = {}
        self.memo: dict[Any, Any] = {}
        self.added: dict[str, torch.Tensor] = {}
        # The activation observer of each value (weights are quantized by their readers).
        self.obs_of = {s.value_id: oid for oid, s in sorted(insertion.slots.items()) if not s.is_weight}
        self.pending: list[Node] = []
        self.journal: list[tuple[dict, str]] = []
        self.ops: list[str] = []
        self.pending_notes: list[str] = []
        self.node: Node | None = None
        self.lowered: list[LoweredMatch] = []
        self.skipped: list[LoweringSkip] = []
        self.quantized: list[str] = []
        self.requantized: list[str] = []
        self.dequantized: list[str] = []
        self.notes: list[LoweringNote] = []

    # ------------------------------------------------------------------ emission
    def emit(self, op: str, target: str, args: tuple = (), kwargs: dict | None = None, *,
             nid: str | None = None, prefix: str | None = None, kernel: bool = False,
             meta: Any = None) -> Ref:
        """Append a node (pending until the current old node is done); returns its Ref.

        The node carries the provenance of the old node being lowered (`lowered_from`).
        """
        nid = nid or self.b.fresh_id(prefix or target.rsplit(".", 1)[-1])
        if meta is None:
            meta = {k: v for k, v in self.node.meta.items() if k in _KEEP_META} if self.node else {}
            meta["lowered_from"] = self.node.id if self.node else ""
        self.pending.append(Node(nid, op, target, args, pmap(kwargs or {}), pmap(meta)))
        if kernel:  # a module call is recorded by its type, like any other op
            spec = self.modules.get(target) if op == "call_module" else None
            self.ops.append(spec.type if spec is not None else target)
        return Ref(nid)

    def call(self, target: str, *args: Any, nid: str | None = None, prefix: str | None = None,
             kernel: bool = False, **kwargs: Any) -> Ref:
        """Shorthand: emit a call_function node."""
        return self.emit("call_function", target, args, kwargs, nid=nid, prefix=prefix, kernel=kernel)

    def _remember(self, table: dict, key: str, value: Any) -> None:
        table[key] = value
        self.journal.append((table, key))

    def note(self, text: str) -> None:
        """Attach a caveat to the match being lowered (kept only if the rule succeeds)."""
        self.pending_notes.append(text)

    def commit(self) -> None:
        for node in self.pending:
            self.b.add(node)
        self.rollback(keep=True)

    def rollback(self, keep: bool = False) -> None:
        """Forget what the current old node emitted (or, with keep, only the bookkeeping)."""
        if not keep:
            for table, key in reversed(self.journal):
                table.pop(key, None)
        self.pending.clear()
        self.journal.clear()
        self.ops.clear()
        self.pending_notes.clear()

    # ------------------------------------------------------------------ reading values
    def load_float(self, nid: str) -> Any:
        """The float form of old value `nid` (a dequantize node, made once, if needed)."""
        if nid in self.float_of:
            return self.float_of[nid]
        qv = self.quant_of.get(nid)
        if qv is None:
            raise StageError(f"internal: %{nid} is read before it is lowered", node_id=nid)
        ref = self.dialect.dequantize(self, qv, prefix=f"{nid}_dq")
        self._remember(self.float_of, nid, ref)
        self.dequantized.append(nid)
        return ref

    def float(self, value: Any) -> Any:
        """`value` (an argument of an old node) with every Ref read in float form."""
        return map_value(value, self.load_float)

    def any_form(self, value: Any) -> Any:
        """`value` with Refs read as they are (quantized if quantized): for metadata reads."""
        return map_value(value, lambda i: self.quant_of[i].ref if i in self.quant_of else self.load_float(i))

    def quant(self, value: Any) -> QVal | None:
        """The quantized form of an argument, or None (not a node, or a float value)."""
        return self.quant_of.get(value.id) if type(value) is Ref else None

    def need_quant(self, value: Any, what: str = "input") -> QVal:
        qv = self.quant(value)
        if qv is None:
            shown = f"%{value.id}" if type(value) is Ref else repr(value)
            raise CannotLower(f"{what} {shown} is not quantized (no observer quantizes it)")
        return qv

    def out_qparams(self, m: Any) -> QParams:
        """The qparams of a match's output: its observer's, else those it shares."""
        oid = self.obs_of.get(m.root) or self.insertion.shares.get(m.root)
        qp = self.qparams.get(oid) if oid is not None else None
        if not static_activation(qp):
            why = "is not observed" if oid is None else f"has no static int8 qparams (observer %{oid})"
            raise CannotLower(f"output %{m.root} {why}")
        return qp

    def source(self, value: Any) -> Node | None:
        """The old node producing `value`, looking through observers; None for constants."""
        if type(value) is not Ref:
            return None
        node = self.old.node(value.id)
        while node.op == "call_function" and node.target == OBSERVE:
            node = self.old.node(node.args[0].id)
        return node

    # ------------------------------------------------------------------ params
    def get_attr(self, path: str) -> Ref:
        """A get_attr node reading params `path` (one per path per sweep)."""
        if path not in self.attr_of:
            self._remember(self.attr_of, path, self.emit("get_attr", path, prefix=path))
        return self.attr_of[path]

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """`make()` once per key in this sweep: a weight quantized or prepacked for two readers
        (a module and a functional op sharing it) is computed by one set of nodes."""
        if key not in self.memo:
            self._remember(self.memo, key, make())
        return self.memo[key]

    def new_param(self, base: str, tensor: torch.Tensor) -> Ref:
        """Store `tensor` under a fresh path (`_qparams.<base>`), return a get_attr of it."""
        stem = f"{NEW_PARAMS}.{sanitize(base)}"
        path, k = stem, 0
        while path in self.params or path in self.added:
            k += 1
            path = f"{stem}_{k}"
        self.added[path] = tensor
        return self.get_attr(path)

    # ------------------------------------------------------------------ the pass
    def run(self, rules: Mapping[str, Callable]) -> Graph:
        """Lower every node in order; returns the new graph. O(n + emitted nodes)."""
        for node in self.old.node_list():
            self.node = node
            m = self.matches.get(node.id)
            if node.op == "call_function" and node.target == OBSERVE:
                self.observer(node)
            elif node.op == "output" or m is None:
                ref = self.copy(node)
                if node.op == "get_attr":  # later weight reads of this path reuse the node
                    self.attr_of.setdefault(node.target, ref)
            elif m.root == node.id:
                self.lower_match(m, rules)
            self.commit()  # inner nodes of a match wait for its root: nothing pending here
        return self.b.finish()

    def copy(self, node: Node, nid: str | None = None) -> Ref:
        """Copy an old node reading float inputs; it becomes that value's float form."""
        args = self.float(node.args)
        kwargs = {k: self.float(v) for k, v in node.kwargs.items()}
        ref = self.emit(node.op, node.target, args, kwargs, nid=nid or node.id, meta=node.meta)
        self._remember(self.float_of, node.id, ref)
        return ref

    def observer(self, node: Node) -> None:
        slot = self.insertion.slots.get(node.id)
        value = node.args[0].id
        qp = self.qparams.get(node.id)
        if slot is None or slot.is_weight or not static_activation(qp):
            self._alias(node.id, value)  # weights are quantized by the rule that reads them
            return
        cur = self.quant_of.get(value)
        if cur is not None and cur.qp == qp:
            self._alias(node.id, value)
            return
        (self.requantized if cur is not None else self.quantized).append(node.id)
        ref = self.dialect.quantize(self, self.load_float(value), qp, nid=node.id)
        self._remember(self.quant_of, node.id, QVal(ref, qp))

    def _alias(self, nid: str, value: str) -> None:
        for table in (self.float_of, self.quant_of):
            if value in table:
                self._remember(table, nid, table[value])

    def lower_match(self, m: Any, rules: Mapping[str, Callable]) -> None:
        # Dynamic matches (activations quantized at run time) have rules of their own,
        # under "dynamic.<handler>": same pattern, different kernels (see rules_dynamic).
        key = f"dynamic.{m.handler}" if m.is_dynamic else m.handler
        rule = rules.get(key)
        try:
            if rule is None:
                raise CannotLower(f"no {self.dialect.name} rule for handler {key!r}")
            out = rule(self, m)
        except CannotLower as e:
            self.rollback()
            for nid in m.nodes:
                self.copy(self.old.node(nid))
            self.skipped.append(LoweringSkip(m.root, m.entry, m.handler, e.reason))
            return
        self.lowered.append(LoweredMatch(m.root, m.entry, m.handler, tuple(self.ops)))
        self.notes.extend(LoweringNote(m.root, text) for text in self.pending_notes)
        self._remember(self.quant_of if isinstance(out, QVal) else self.float_of, m.root, out)

"""Reading a match's operands from the observed graph: op names, weights, conv/linear geometry.

Everything here reads; nothing emits. A rule gathers its operands first (raising CannotLower if
the match cannot be lowered) and only then emits, so a refusal leaves nothing behind.
"""

from __future__ import annotations

import re
from typing import Any

from attrs import frozen
from pyrsistent import PVector

from ..ir import Node, Ref
from ..observers import ObserverError, ObserverSpec, QParams, init_stats, observe, qparams
from .dialect import Weight
from .sweep import CannotLower, Sweep

RELU = frozenset({"torch.nn.ReLU", "torch.nn.functional.relu", "torch.relu", "relu", "relu_"})
TANH = frozenset({"torch.nn.Tanh", "torch.tanh", "torch.nn.functional.tanh", "tanh"})
LEAKY_RELU = frozenset({"torch.nn.LeakyReLU", "torch.nn.functional.leaky_relu"})
ADD = frozenset({"operator.add", "torch.add"})
# Class names of conv/linear modules, plain, QAT or fused: `ConvReLU2d`, `LinearReLU`, ...
_WEIGHTED = re.compile(r"(?P<kind>ConvTranspose|Conv|Linear)(?P<fused>BnReLU|Bn|ReLU)?(?P<dim>[123]d)?\Z")
_KIND = {"ConvTranspose": "conv_transpose", "Conv": "conv", "Linear": "linear"}


def op_name(sw: Sweep, node: Node) -> str:
    """What a node calls: its module's type, its function's name, or its method's name."""
    if node.op == "call_module":
        spec = sw.modules.get(node.target)
        return spec.type if spec is not None else str(node.meta.get("type", ""))
    return node.target


def arg(node: Node, pos: int, name: str, default: Any = None) -> Any:
    """Positional-or-keyword argument `name` of a call."""
    if pos < len(node.args):
        return node.args[pos]
    return node.kwargs.get(name, default)


def static(value: Any, what: str) -> Any:
    """`value`, which must be known now (not computed by the graph)."""
    if type(value) is Ref:
        raise CannotLower(f"{what} is computed at run time (%{value.id}); kernels take constants")
    return tuple(value) if isinstance(value, (list, tuple, PVector)) else value


def ntuple(value: Any, d: int, what: str) -> tuple[int, ...]:
    value = static(value, what)
    return tuple(value) if isinstance(value, tuple) else (value,) * d


# ---------------------------------------------------------------------------------- weights
def weight(sw: Sweep, m: Any, where: Any) -> tuple[Any, str, QParams]:
    """A weight's tensor source, name and qparams; `where` is a params path or an old arg.

    Weights need no data: their qparams come from their tensor, observed here with the
    weight spec (`insertion.weights`, else the match's qconfig).
    """
    if isinstance(where, str):
        key, name, tensor = m.module_weight, where, sw.params.get(where)
    else:
        src = sw.source(where)
        if src is None or src.op != "get_attr" or src.target not in sw.params:
            raise CannotLower(f"weight {where!r} is not a parameter (computed weights stay float)")
        # Read by path from here on, so a module and a functional op sharing it share nodes.
        key, name, tensor, where = src.id, src.target, sw.params[src.target], src.target
    spec: ObserverSpec | None = sw.insertion.weights.get(key) or m.qconfig.weight
    if tensor is None or spec is None or spec.is_dynamic or spec.kind in ("placeholder", "noop"):
        raise CannotLower(f"weight {name} has no static weight observer")
    try:
        qp = qparams(spec, observe(spec, init_stats(spec, name), tensor.detach(), name), name)
    except ObserverError as e:
        raise CannotLower(f"weight {name}: {e}") from None
    return where, name, qp


def weight_ref(sw: Sweep, where: str) -> Ref:
    """Emit: the float weight in the new graph (a get_attr of its params path)."""
    return sw.get_attr(where)


def make_weight(sw: Sweep, found: tuple[Any, str, QParams]) -> Weight:
    where, name, qp = found
    return Weight(weight_ref(sw, where), name, qp)


def bias_ref(sw: Sweep, where: Any) -> Any:
    """Emit: a float bias or norm parameter (None stays None), by path when it is a param."""
    if where is None or isinstance(where, str):
        return None if where is None else sw.get_attr(where)
    src = sw.source(where)
    if src is not None and src.op == "get_attr" and src.target in sw.params:
        return sw.get_attr(src.target)
    return sw.float(where)


# --------------------------------------------------------------------- conv / linear operands
@frozen
class Weighted:
    """A conv, transposed conv or linear match, read.

    Attributes:
        kind: "conv", "conv_transpose" or "linear".
        dim: spatial dims (1, 2, 3; 0 for linear).
        x: the activation argument (old graph).
        weight: params path (module) or the old weight argument (functional).
        bias: the same for the bias, or None.
        geometry: conv (stride, padding, dilation, groups); transposed (stride, padding,
            output_padding, dilation, groups); linear ().
        post: ops after it in the match: "relu", "tanh", ("leaky_relu", slope),
            ("add", accumulator argument).
    """

    kind: str
    dim: int
    x: Any
    weight: Any
    bias: Any
    geometry: tuple
    post: tuple


def weighted(sw: Sweep, m: Any) -> Weighted:
    anchor = sw.old.node(m.anchor)
    found = _from_module(sw, anchor) if anchor.op == "call_module" else _from_function(anchor)
    kind, dim, x, w, b, geometry, fused = found
    post = (("relu",) if fused == "ReLU" else ()) + post_ops(sw, m)
    return Weighted(kind, dim, x, w, b, geometry, post)


def _from_module(sw: Sweep, node: Node) -> tuple:
    spec = sw.modules[node.target]
    hit = _WEIGHTED.match(spec.type.rsplit(".", 1)[-1])
    if hit is None or spec.param("weight") is None:
        raise CannotLower(f"cannot read weights of a {spec.type}")
    if hit["fused"] and "Bn" in hit["fused"]:
        raise CannotLower(f"{spec.type} keeps its batch norm; fuse in eval mode to fold it first")
    kind, dim = _KIND[hit["kind"]], int(hit["dim"][0]) if hit["dim"] else 0
    if kind == "linear":
        return kind, 0, node.args[0], spec.param("weight"), spec.param("bias"), (), hit["fused"]
    if spec.attr("padding_mode", "zeros") != "zeros":
        raise CannotLower(f"padding_mode {spec.attr('padding_mode')!r} has no quantized kernel")
    pad = spec.attr("padding")
    if pad == "same":
        raise CannotLower("padding='same' has no quantized kernel")
    padding = (0,) * dim if pad == "valid" else ntuple(pad, dim, "padding")
    a = {k: ntuple(spec.attr(k), dim, k) for k in ("stride", "dilation", "output_padding")}
    geo = (a["stride"], padding, a["dilation"], spec.attr("groups"))
    if kind == "conv_transpose":
        geo = (a["stride"], padding, a["output_padding"], a["dilation"], spec.attr("groups"))
    return kind, dim, node.args[0], spec.param("weight"), spec.param("bias"), geo, hit["fused"]


def _from_function(node: Node) -> tuple:
    name = node.target.rsplit(".", 1)[-1]
    x, w, b = arg(node, 0, "input"), arg(node, 1, "weight"), arg(node, 2, "bias")
    if name == "linear":
        return "linear", 0, x, w, b, (), None
    dim = int(name[-2])
    if name.startswith("conv_transpose"):
        names = (("stride", 1), ("padding", 0), ("output_padding", 0), ("groups", 1), ("dilation", 1))
        v = {k: arg(node, 3 + i, k, dflt) for i, (k, dflt) in enumerate(names)}
        geo = tuple(ntuple(v[k], dim, k) for k in ("stride", "padding", "output_padding", "dilation"))
        return "conv_transpose", dim, x, w, b, geo + (static(v["groups"], "groups"),), None
    v = {k: arg(node, 3 + i, k, dflt) for i, (k, dflt) in enumerate((("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)))}
    if isinstance(v["padding"], str):
        raise CannotLower(f"padding={v['padding']!r} has no quantized kernel")
    geo = tuple(ntuple(v[k], dim, k) for k in ("stride", "padding", "dilation"))
    return "conv", dim, x, w, b, geo + (static(v["groups"], "groups"),), None


def post_ops(sw: Sweep, m: Any) -> tuple:
    """The ops of a match after its anchor, in order, as the kernels name them."""
    out: list[Any] = []
    for nid in m.nodes:
        node = sw.old.node(nid)
        if nid == m.anchor:
            continue
        name = op_name(sw, node)
        if name in ADD:  # onednn's conv + add: the other input is the accumulator
            acc = [a for a in node.args[:2] if type(a) is Ref and a.id not in m.nodes]
            if len(node.args) != 2 or len(acc) != 1 or node.kwargs:
                raise CannotLower(f"add %{nid} is not conv + one tensor")
            out.append(("add", acc[0]))
        elif name in RELU:
            out.append("relu")
        elif name in TANH:
            out.append("tanh")
        elif name in LEAKY_RELU:
            out.append(("leaky_relu", leaky_slope(sw, node)))
        elif "BatchNorm" in name:
            raise CannotLower(f"batch norm %{nid} is not folded; run the fuse stage (eval mode) first")
        else:
            raise CannotLower(f"no fused kernel for {name} (%{nid}) after %{m.anchor}")
    return tuple(out)


def leaky_slope(sw: Sweep, node: Node) -> float:
    if node.op == "call_module":
        return float(sw.modules[node.target].attr("negative_slope", 0.01))
    return float(static(arg(node, 1, "negative_slope", 0.01), "negative_slope"))

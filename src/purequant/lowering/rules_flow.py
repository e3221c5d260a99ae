"""Rules that move quantized values along (shape and pooling ops, metadata reads), and the
reference target's generic rule. (Weight-only embeddings: rules_dynamic.)"""

from __future__ import annotations

from typing import Any

from ..ir import Node, Ref, iter_refs, map_value
from .operands import op_name
from .sweep import CannotLower, QVal, Sweep

Q = "torch.ops.quantized."
NN, F = "torch.nn.", "torch.nn.functional."
# Ops that only move or select elements: exact on the integer values of the reference target
# (max pooling too: dequantization is monotonic). Everything else is computed in float.
EXACT = frozenset({
    "view", "reshape", "torch.reshape", "flatten", "torch.flatten", NN + "Flatten", "permute",
    "torch.permute", "transpose", "torch.transpose", "squeeze", "squeeze_", "torch.squeeze",
    "unsqueeze", "unsqueeze_", "torch.unsqueeze", "contiguous", "detach", "detach_",
    "operator.getitem", "chunk", "torch.chunk", "split", "torch.split", "torch.narrow", "repeat",
    "repeat_interleave", "torch.repeat_interleave", NN + "Identity", "resize_",
    NN + "MaxPool2d", F + "max_pool2d", NN + "PixelShuffle", "torch.pixel_shuffle",
    NN + "PixelUnshuffle", "torch.pixel_unshuffle",
})
# Shares-qparams ops whose quantized-tensor form torch lacks.
NO_QUANTIZED_FORM = frozenset({"operator.floordiv"})


def _primary(sw: Sweep, node: Node) -> QVal:
    """The quantized input a shares-qparams op passes along: its first tensor argument."""
    for a in node.args:
        refs = list(iter_refs(a))
        if refs:
            return sw.need_quant(Ref(refs[0]))
    raise CannotLower("no tensor input")


def _quantized_args(sw: Sweep, value: Any) -> Any:
    return map_value(value, lambda i: sw.quant_of[i].ref if i in sw.quant_of else sw.load_float(i))


def _copy_on_quantized(sw: Sweep, node: Node, nid: str) -> Ref:
    kwargs = {k: _quantized_args(sw, v) for k, v in node.kwargs.items()}
    # Quantized kernels may hand back channels-last tensors (quantized.batch_norm2d does), on
    # which `view` can fail where the float graph's contiguous tensor did not. `reshape` is the
    # same dataflow and still returns a view whenever the layout allows.
    target = "reshape" if node.op == "call_method" and node.target == "view" else node.target
    return sw.emit(node.op, target, _quantized_args(sw, node.args), kwargs, nid=nid, meta=node.meta)


def native_shares(sw: Sweep, m: Any) -> QVal:
    """Pooling, reshapes, relu/clamp...: run on the quantized tensor, which keeps its qparams."""
    node = sw.old.node(m.anchor)
    if len(m.nodes) != 1 or op_name(sw, node) in NO_QUANTIZED_FORM:
        raise CannotLower(f"{op_name(sw, node)} has no quantized form")
    x = _primary(sw, node)
    return QVal(_copy_on_quantized(sw, node, m.root), x.qp)


def reference_shares(sw: Sweep, m: Any) -> QVal:
    """Integer tensors through data-movement ops as they are; float ops between dq and q."""
    node = sw.old.node(m.anchor)
    if len(m.nodes) != 1:
        raise CannotLower("a multi-node shares-qparams pattern")
    x = _primary(sw, node)
    if op_name(sw, node) in EXACT:
        return QVal(_copy_on_quantized(sw, node, m.root), x.qp)
    kwargs = {k: sw.float(v) for k, v in node.kwargs.items()}
    y = sw.emit(node.op, node.target, sw.float(node.args), kwargs, prefix=m.root, kernel=True)
    return QVal(sw.dialect.quantize(sw, y, x.qp, nid=m.root), x.qp)


def tensor_info(sw: Sweep, m: Any) -> Ref:
    """size / shape: read the value in whichever form it has (no dequantize for metadata)."""
    node = sw.old.node(m.anchor)
    kwargs = {k: sw.any_form(v) for k, v in node.kwargs.items()}
    return sw.emit(node.op, node.target, sw.any_form(node.args), kwargs, nid=m.root, meta=node.meta)


def reference_wrap(sw: Sweep, m: Any) -> QVal:
    """The reference form of any op: its activation inputs dequantized, the matched float ops
    copied, the output quantized with its observer's qparams (or its input's, if it shares)."""
    inputs = set(m.inputs)
    inner: dict[str, Ref] = {}
    for nid in m.nodes:
        for ref in sw.old.node(nid).input_ids():
            src = sw.source(Ref(ref))
            if ref not in inner and src is not None and src.id in inputs:
                sw.need_quant(Ref(ref))
    try:
        out = sw.out_qparams(m)
    except CannotLower:
        out = _primary(sw, sw.old.node(m.anchor)).qp  # tensor-scalar add/mul share their input's
    for nid in m.nodes:
        node = sw.old.node(nid)
        load = lambda i: inner[i] if i in inner else sw.load_float(i)  # noqa: E731
        kwargs = {k: map_value(v, load) for k, v in node.kwargs.items()}
        inner[nid] = sw.emit(node.op, node.target, map_value(node.args, load), kwargs,
                             prefix=nid, kernel=nid == m.anchor)
    return QVal(sw.dialect.quantize(sw, inner[m.root], out, nid=m.root), out)

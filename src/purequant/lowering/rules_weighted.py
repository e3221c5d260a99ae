"""Rules for ops with weights: conv1d/2d/3d, transposed convs, linear (and their fused ReLUs).

native: quantize the weight, prepack it with its bias and geometry (the prepack stays a graph
node until `fold_weights` evaluates it once), run the kernel on the quantized input with the
output's scale and zero point as constants.

reference: dequantize the input, quantize -> dequantize the weight, run the float op (and its
fused activation), quantize the result with the output's qparams.
"""

from __future__ import annotations

from typing import Any

from .operands import Weighted, bias_ref, make_weight, weight, weighted
from .sweep import CannotLower, QVal, Sweep

Q = "torch.ops.quantized."
_FLOAT_POST = {"relu": "torch.nn.functional.relu", "tanh": "torch.tanh", "leaky_relu": "torch.nn.functional.leaky_relu",
               "add": "operator.add"}


def _base(op: Weighted) -> str:
    return "linear" if op.kind == "linear" else f"{op.kind}{op.dim}d"


def _kernel(sw: Sweep, op: Weighted) -> tuple[str, tuple, tuple]:
    """The kernel's name, the args between x and the packed weight (an add's accumulator),
    and the args after (x, [acc], packed, scale, zero_point)."""
    base, post = _base(op), op.post
    if not post:
        return base, (), ()
    if post == ("relu",) and op.kind != "conv_transpose":
        return base + "_relu", (), ()
    onednn = sw.backend.name == "onednn"
    if onednn and base == "conv2d" and post[0][0] == "add" and post[1:] in ((), ("relu",)):
        return "conv2d_add" + ("_relu" if post[1:] else ""), (sw.need_quant(post[0][1], "accumulator").ref,), ()
    if onednn and op.kind == "linear" and post == ("tanh",):
        return "linear_tanh", (), ()
    if onednn and op.kind == "linear" and len(post) == 1 and post[0][0] == "leaky_relu":
        return "linear_leaky_relu", (), (post[0][1],)
    raise CannotLower(f"no quantized {base} kernel fused with {', '.join(map(str, post))} on {sw.backend.name}")


def _checked_input(sw: Sweep, op: Weighted) -> QVal:
    x = sw.need_quant(op.x)
    if x.qp is None or x.qp.dtype not in sw.backend.activation_dtypes:
        dtype = x.qp.dtype if x.qp else "unknown"
        raise CannotLower(f"{sw.backend.name} kernels take {sorted(sw.backend.activation_dtypes)} activations, not {dtype}")
    return x


def _depthwise_note(sw: Sweep, op: Weighted, x: QVal, weight_name: str) -> None:
    """Note a depthwise conv whose kernel may saturate with these (8-bit) activations."""
    groups = op.geometry[-1] if op.kind == "conv" else 1
    depthwise = groups > 1 and sw.params[weight_name].shape[1] == 1
    if depthwise and sw.backend.depthwise_saturates and x.qp.quant_max - x.qp.quant_min > 127:
        sw.note(f"depthwise conv on {sw.backend.name} with 8-bit activations: the kernel accumulates "
                "in 16 bits and may saturate; reduce_range activations avoid it")


def native_weighted(sw: Sweep, m: Any) -> QVal:
    """conv / conv_transpose / linear (+ fused activation) on torch.ops.quantized kernels."""
    op = weighted(sw, m)
    x = _checked_input(sw, op)
    out = sw.out_qparams(m)
    found = weight(sw, m, op.weight)
    if op.kind == "conv_transpose" and found[2].axis is not None and not sw.backend.per_channel_transposed:
        raise CannotLower(f"{sw.backend.name} has no per-channel transposed conv kernel; use per-tensor weights")
    kernel, acc, extra = _kernel(sw, op)
    _depthwise_note(sw, op, x, found[1])
    wq = sw.dialect.quantize_weight(sw, make_weight(sw, found))
    prepack, b = f"{Q}{_base(op)}_prepack", bias_ref(sw, op.bias)
    packed = sw.cached((prepack, wq, b, op.geometry),
                       lambda: sw.call(prepack, wq, b, *op.geometry, prefix=f"{m.anchor}_packed", kernel=True))
    ref = sw.call(Q + kernel, x.ref, *acc, packed, out.scale[0], out.zero_point[0], *extra, nid=m.root, kernel=True)
    return QVal(ref, out)


def _float_call(sw: Sweep, op: Weighted, x: Any, w: Any, b: Any) -> Any:
    if op.kind == "linear":
        return sw.call("torch.nn.functional.linear", x, w, b, kernel=True)
    if op.kind == "conv":
        return sw.call(f"torch.conv{op.dim}d", x, w, b, *op.geometry, kernel=True)
    stride, padding, output_padding, dilation, groups = op.geometry
    return sw.call(f"torch.conv_transpose{op.dim}d", x, w, b, stride, padding, output_padding, groups,
                   dilation, kernel=True)


def reference_weighted(sw: Sweep, m: Any) -> QVal:
    """conv / conv_transpose / linear (+ activation, + accumulator) as float ops between
    quantize and dequantize."""
    op = weighted(sw, m)
    sw.need_quant(op.x)
    for post in op.post:
        if post[0] == "add":
            sw.need_quant(post[1], "accumulator")
    out = sw.out_qparams(m)
    found = weight(sw, m, op.weight)
    w = sw.dialect.weight_float(sw, make_weight(sw, found))
    y = _float_call(sw, op, sw.load_float(op.x.id), w, bias_ref(sw, op.bias))
    for post in op.post:
        name, extra = (post, ()) if isinstance(post, str) else (post[0], post[1:])
        if name == "add":
            extra = (sw.load_float(extra[0].id),)
        y = sw.call(_FLOAT_POST[name], y, *extra, kernel=True)
    return QVal(sw.dialect.quantize(sw, y, out, nid=m.root), out)

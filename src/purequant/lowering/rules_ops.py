"""Native rules for ops without weights to pack: add/mul, matmul, cat, activations, norms,
fixed-qparams ops. Each reads its quantized inputs and the output's qparams, then emits one
`torch.ops.quantized.*` kernel (or an aten op that runs on quantized tensors and keeps
fixed output qparams: tanh, hardsigmoid)."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from pyrsistent import pvector

from ..ir import Node, Ref
from .operands import arg, bias_ref, make_weight, op_name, post_ops, static, weight
from .sweep import CannotLower, QVal, Sweep

Q = "torch.ops.quantized."
F = "torch.nn.functional."
NN = "torch.nn."


def native_binary(sw: Sweep, m: Any) -> QVal:
    """add / mul (+ relu): tensor-tensor with the output's qparams, or tensor-scalar."""
    node = sw.old.node(m.anchor)
    a, b = arg(node, 0, "input"), arg(node, 1, "other")
    if len(node.args) > 2 or node.kwargs.get("alpha", 1) != 1 or "out" in node.kwargs:
        raise CannotLower("add with alpha or out= has no quantized kernel")
    post = post_ops(sw, m)
    if post not in ((), ("relu",)):
        raise CannotLower(f"no quantized add/mul fused with {post}")
    kind = ("add" if node.target.endswith("add") else "mul") + ("_relu" if post else "")
    if type(a) is Ref and type(b) is Ref:
        qa, qb, out = sw.need_quant(a), sw.need_quant(b), sw.out_qparams(m)
        ref = sw.call(Q + kind, qa.ref, qb.ref, out.scale[0], out.zero_point[0], nid=m.root, kernel=True)
        return QVal(ref, out)
    tensor, scalar = (a, b) if type(a) is Ref else (b, a)
    if type(scalar) not in (int, float):
        raise CannotLower(f"{kind} of {scalar!r} has no quantized kernel")
    q = sw.need_quant(tensor)
    scalar_kind = kind.replace("add", "add_scalar").replace("mul", "mul_scalar")
    # The kernel picks its own output qparams (it shifts the zero point): known at run time.
    return QVal(sw.call(Q + scalar_kind, q.ref, float(scalar), nid=m.root, kernel=True), None)


def native_matmul(sw: Sweep, m: Any) -> QVal:
    """matmul / bmm of two quantized tensors."""
    node = sw.old.node(m.anchor)
    qa, qb = sw.need_quant(arg(node, 0, "input")), sw.need_quant(arg(node, 1, "other"))
    out = sw.out_qparams(m)
    ref = sw.call(Q + "matmul", qa.ref, qb.ref, out.scale[0], out.zero_point[0], nid=m.root, kernel=True)
    return QVal(ref, out)


def native_cat(sw: Sweep, m: Any) -> QVal:
    """cat (requantizing every input to the shared qparams) and stack (equal qparams only)."""
    node = sw.old.node(m.anchor)
    tensors = static(arg(node, 0, "tensors"), "the tensor list")
    dim = static(arg(node, 1, "dim", 0), "dim")
    qs = [sw.need_quant(t) for t in tensors]
    refs = pvector(q.ref for q in qs)
    if node.target == "torch.stack":
        if len({q.qp for q in qs}) != 1 or qs[0].qp is None:
            raise CannotLower("stack of quantized tensors needs equal qparams")
        return QVal(sw.call("torch.stack", refs, dim, nid=m.root), qs[0].qp)
    out = sw.out_qparams(m)
    return QVal(sw.call(Q + "cat", refs, dim, out.scale[0], out.zero_point[0], nid=m.root, kernel=True), out)


def _attr(sw: Sweep, node: Node, name: str, pos: int, default: Any) -> Any:
    """A hyperparameter: the module's attribute, else the call's argument."""
    if node.op == "call_module":
        return sw.modules[node.target].attr(name, default)
    return static(arg(node, pos, name, default), name)


def _elu(sw: Sweep, m: Any, node: Node, x: QVal, s: float, z: int) -> Ref:
    return sw.call(Q + "elu", x.ref, s, z, float(_attr(sw, node, "alpha", 1, 1.0)), nid=m.root, kernel=True)


def _hardswish(sw: Sweep, m: Any, node: Node, x: QVal, s: float, z: int) -> Ref:
    return sw.call(Q + "hardswish", x.ref, s, z, nid=m.root, kernel=True)


def _leaky_relu(sw: Sweep, m: Any, node: Node, x: QVal, s: float, z: int) -> Ref:
    slope = float(_attr(sw, node, "negative_slope", 1, 0.01))
    return sw.call(Q + "leaky_relu", x.ref, slope, False, s, z, nid=m.root, kernel=True)


def _dropout(sw: Sweep, m: Any, node: Node, x: QVal, s: float, z: int) -> Ref:
    if _attr(sw, node, "training", 2, False):
        raise CannotLower("training-mode dropout has no quantized kernel")
    p = float(_attr(sw, node, "p", 1, 0.5))
    return sw.call(Q + "dropout", x.ref, s, z, p, False, nid=m.root, kernel=True)


def _prelu(sw: Sweep, m: Any, node: Node, x: QVal, s: float, z: int) -> Ref:
    found = weight(sw, m, sw.modules[node.target].param("weight"))
    wq = sw.dialect.quantize_weight(sw, make_weight(sw, found))
    return sw.call(Q + "prelu", x.ref, wq, s, z, nid=m.root, kernel=True)


_DEFAULT_OPS: MappingProxyType[str, Callable] = MappingProxyType({
    NN + "ELU": _elu, F + "elu": _elu,
    NN + "Hardswish": _hardswish, F + "hardswish": _hardswish,
    NN + "LeakyReLU": _leaky_relu, F + "leaky_relu": _leaky_relu,
    NN + "Dropout": _dropout, F + "dropout": _dropout,
    NN + "PReLU": _prelu,
})


def native_default_op(sw: Sweep, m: Any) -> QVal:
    """elu, hardswish, leaky_relu, dropout (eval), prelu: one kernel each, own output qparams."""
    node = sw.old.node(m.anchor)
    emit = _DEFAULT_OPS.get(op_name(sw, node))
    if emit is None or len(m.nodes) != 1:
        raise CannotLower(f"no quantized kernel for {op_name(sw, node)}")
    x, out = sw.need_quant(arg(node, 0, "input")), sw.out_qparams(m)
    return QVal(emit(sw, m, node, x, out.scale[0], out.zero_point[0]), out)


# Fixed output qparams the aten kernels give tanh and hardsigmoid on quantized tensors.
_ATEN_FIXED = {
    "tanh": {"quint8": (2.0 / 256.0, 128), "qint8": (2.0 / 256.0, 0)},
    "hardsigmoid": {"quint8": (1.0 / 256.0, 0), "qint8": (1.0 / 256.0, -128)},
}
_FIXED_KIND = {
    NN + "Sigmoid": "sigmoid", "torch.sigmoid": "sigmoid", F + "sigmoid": "sigmoid", "sigmoid": "sigmoid",
    NN + "Softmax": "softmax", NN + "Tanh": "tanh", "torch.tanh": "tanh", F + "tanh": "tanh", "tanh": "tanh",
    NN + "Hardsigmoid": "hardsigmoid", F + "hardsigmoid": "hardsigmoid", "hardsigmoid": "hardsigmoid",
}


def native_fixed_qparams(sw: Sweep, m: Any) -> QVal:
    """sigmoid, softmax (kernels taking the fixed qparams); tanh, hardsigmoid (aten on qtensors)."""
    node = sw.old.node(m.anchor)
    kind = _FIXED_KIND.get(op_name(sw, node))
    if kind is None or len(m.nodes) != 1 or (len(node.args) > 1 and kind != "softmax"):
        raise CannotLower(f"no quantized kernel for {op_name(sw, node)} here")
    x, out = sw.need_quant(arg(node, 0, "input")), sw.out_qparams(m)
    s, z = out.scale[0], out.zero_point[0]
    if kind == "sigmoid":
        return QVal(sw.call(Q + "sigmoid", x.ref, s, z, nid=m.root, kernel=True), out)
    if kind == "softmax":
        dim = sw.modules[node.target].attr("dim")
        if dim is None:
            raise CannotLower("Softmax with an implicit dim")
        return QVal(sw.call(Q + "softmax", x.ref, dim, s, z, nid=m.root, kernel=True), out)
    target = "torch.tanh" if kind == "tanh" else F + "hardsigmoid"
    ref = sw.call(target, x.ref, nid=m.root, kernel=True)
    fixed = _ATEN_FIXED[kind].get(x.qp.dtype if x.qp else "")
    return QVal(ref, out if fixed == (s, z) and x.qp.dtype == out.dtype else None)


def _norm_operands(sw: Sweep, node: Node) -> tuple[str, tuple, Any, Any, float]:
    """(kernel, args before weight, weight, bias, eps) of a layer/group/instance norm."""
    name = op_name(sw, node)
    if node.op == "call_module":
        spec = sw.modules[node.target]
        w, b, eps = spec.param("weight"), spec.param("bias"), float(spec.attr("eps", 1e-5))
        if "InstanceNorm" in name and spec.attr("track_running_stats"):
            raise CannotLower("instance norm with running stats has no quantized kernel")
        if name.endswith("LayerNorm"):
            return "layer_norm", (tuple(spec.attr("normalized_shape")),), w, b, eps
        if name.endswith("GroupNorm"):
            return "group_norm", (spec.attr("num_groups"),), w, b, eps
        return "instance_norm", (), w, b, eps
    if name.endswith("layer_norm") or name.endswith("group_norm"):
        first = static(arg(node, 1, "normalized_shape" if "layer" in name else "num_groups"), "shape")
        w, b, eps = arg(node, 2, "weight"), arg(node, 3, "bias"), arg(node, 4, "eps", 1e-5)
        head = (tuple(first),) if "layer" in name else (first,)
        return name.rsplit(".", 1)[-1], head, w, b, float(static(eps, "eps"))
    if arg(node, 1, "running_mean") is not None and not arg(node, 5, "use_input_stats", True):
        raise CannotLower("instance norm with running stats has no quantized kernel")
    return "instance_norm", (), arg(node, 3, "weight"), arg(node, 4, "bias"), float(static(arg(node, 7, "eps", 1e-5), "eps"))


def native_norm(sw: Sweep, m: Any) -> QVal:
    """layer_norm, group_norm, instance_norm with float weight and bias."""
    node = sw.old.node(m.anchor)
    kernel, head, w, b, eps = _norm_operands(sw, node)
    x, out = sw.need_quant(arg(node, 0, "input")), sw.out_qparams(m)
    args = (*head, bias_ref(sw, w), bias_ref(sw, b), eps, out.scale[0], out.zero_point[0])
    return QVal(sw.call(Q + kernel, x.ref, *args, nid=m.root, kernel=True), out)


def native_batch_norm(sw: Sweep, m: Any) -> QVal:
    """BatchNorm2d/3d (+ relu) in eval mode with its running statistics."""
    node = sw.old.node(m.anchor)
    spec = sw.modules[node.target]
    d = spec.type[-2]
    paths = [spec.param(k) for k in ("weight", "bias", "running_mean", "running_var")]
    if spec.attr("training") or paths[2] is None or d not in "23":
        raise CannotLower("batch norm without running statistics (or training) has no quantized kernel")
    relu = spec.type.rsplit(".", 1)[-1].startswith("BNReLU") or post_ops(sw, m) == ("relu",)
    x, out = sw.need_quant(arg(node, 0, "input")), sw.out_qparams(m)
    refs = [bias_ref(sw, p) for p in paths]
    kernel = f"{Q}batch_norm{d}d" + ("_relu" if relu else "")
    eps = float(spec.attr("eps", 1e-5))
    return QVal(sw.call(kernel, x.ref, *refs, eps, out.scale[0], out.zero_point[0], nid=m.root, kernel=True), out)

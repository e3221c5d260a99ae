"""onednn's extra fusions: conv2d + add (+ relu) and linear + leaky_relu / tanh.

conv + add matches an add whose one input is a single-use conv (optionally conv -> bn); the
other input is ANY, an activation input of the pattern. Both sides are listed, as torch.ao
does, so `add(x, conv(y))` and `add(conv(y), x)` both fuse.
"""

from __future__ import annotations

from .defaults import FUNCTIONAL_WEIGHTS, NN, NNI, OWN, P1, P2, P3, P4, F, _e
from .entry import PatternEntry
from .op import function, module
from .pattern import ANY, Pat, seq

ADD = function("torch.add", "operator.add")


def conv_add_entries(cfg) -> list[PatternEntry]:
    """conv2d (+ bn2d) + add (+ nn.ReLU), either add input, and the fused modules."""
    conv, bn, relu = module(NN + "Conv2d"), module(NN + "BatchNorm2d"), module(NN + "ReLU")
    add_f, add_relu_f = NNI + "ConvAdd2d", NNI + "ConvAddReLU2d"
    mw = {"module_weight": True}
    out = []
    for with_bn, inner in ((False, Pat(conv)), (True, seq(conv, bn))):
        tag, extra = ("_bn" if with_bn else ""), (P1 if with_bn else 0)
        for side, args in (("left", (inner, ANY)), ("right", (ANY, inner))):
            add = Pat(ADD, args)
            out.append(_e(f"conv2d{tag}_add_{side}", add, P2 + extra, OWN, cfg, "conv_add", fused_module=add_f, **mw))
            out.append(_e(f"conv2d{tag}_add_relu_{side}", Pat(relu, (add,)), P3 + extra, OWN, cfg, "conv_add", fused_module=add_relu_f, **mw))
    out.append(_e("conv2d_add_fused", Pat(module(add_f)), P1, OWN, cfg, "conv_add", **mw))
    out.append(_e("conv2d_add_relu_fused", Pat(module(add_relu_f)), P1, OWN, cfg, "conv_add", **mw))
    assert max(e.priority for e in out) == P4
    return out


def linear_eltwise_entries(cfg) -> list[PatternEntry]:
    """linear + leaky_relu and linear + tanh (module and functional), linear + bn + leaky_relu."""
    lin, func = module(NN + "Linear"), function(F + "linear")
    mw = {"module_weight": True}
    out = []
    for name, post, fused in (
        ("leaky_relu", module(NN + "LeakyReLU") | function(F + "leaky_relu"), NNI + "LinearLeakyReLU"),
        ("tanh", module(NN + "Tanh") | function("torch.tanh"), NNI + "LinearTanh"),
    ):
        out.append(_e(f"linear_{name}", seq(lin, post), P2, OWN, cfg, "linear", fused_module=fused, **mw))
        out.append(_e(f"linear_{name}_fused", Pat(module(fused)), P1, OWN, cfg, "linear", **mw))
        out.append(_e(f"linear_functional_{name}", seq(func, post), P2, OWN, cfg, "linear", **FUNCTIONAL_WEIGHTS))
    bn_lrelu = seq(lin, module(NN + "BatchNorm1d"), module(NN + "LeakyReLU"))
    out.append(_e("linear_bn_leaky_relu", bn_lrelu, P3, OWN, cfg, "linear", fused_module=NNI + "LinearLeakyReLU", **mw))
    return out

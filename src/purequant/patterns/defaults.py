"""The default pattern tables: torch.ao 2.13's x86, fbgemm, qnnpack and onednn backends as data.

Every op of torch.ao's x86 BackendConfig has an entry here (tests/test_patterns.py checks it
against torch.ao itself). A few ops torch.ao lacks are added and marked with a `note`: method
and module spellings of ops it covers as functions (`x.flatten()`, `nn.Flatten`, `torch.relu`),
`bmm`, `chunk`/`split`/`getitem`, the upsample family, GroupNorm/LayerNorm on x86.

Priorities are explicit: 100 per node the pattern covers (so conv-bn-relu 300 beats conv-relu
200 beats conv 100), plus nothing else; entries of equal priority never match at the same node
except by listing the same op twice, and then the name decides.

The backends differ where torch.ao's do:
* fbgemm: binary and fixed-qparams ops accept quint8 without a weight dtype (x86 reuses its
  weighted int8 config for them, which only matters to ops with weights: none);
* qnnpack: every static config also comes in a qint8 symmetric flavour with xnnpack's limits
  (scale >= 2**-12, weights in [-127, 127]); no size/shape entries;
* onednn: conv2d + add (+ relu) fusions, linear + leaky_relu / tanh fusions, LayerNorm with
  float weights, dynamic int8 only (no fp16), qint8 weight-only embeddings; no size/shape.
"""

from __future__ import annotations

from attrs import frozen

from .entry import Constraint, DTypeConfig, Observation, PatternEntry, caller_source
from .op import function, method, module
from .pattern import Pat, seq

NN, F = "torch.nn.", "torch.nn.functional."
NNI, NNIQAT, NNQAT = "torch.ao.nn.intrinsic.", "torch.ao.nn.intrinsic.qat.", "torch.ao.nn.qat."
PQ = "purequant.nn."  # the fused modules purequant's own `fuse` stage makes

OWN, SHARES, FIXED, NONE = (
    Observation.OWN_OUTPUT, Observation.SHARES_INPUT, Observation.FIXED, Observation.NONE,
)
P1, P2, P3, P4 = 100, 200, 300, 400

# relu as torch.ao fuses it after conv/linear/bn, and the wider set it accepts after add/mul.
RELU = module(NN + "ReLU") | function(F + "relu")
RELU_BINARY = RELU | function("torch.relu")
FUNCTIONAL_WEIGHTS = {"weight_arg": (1, "weight"), "bias_arg": (2, "bias")}
BY_TENSOR_ARGS = {0: NONE, 1: SHARES, 2: OWN}
FIXED_0_TO_1 = {"quint8": (1.0 / 256.0, 0), "qint8": (1.0 / 256.0, -128)}
FIXED_NEG1_TO_1 = {"quint8": (2.0 / 256.0, 128), "qint8": (2.0 / 256.0, 0)}

# --- dtype configs ----------------------------------------------------------------------------
WEIGHTED_INT8 = DTypeConfig("quint8", "qint8", "float32")
DEFAULT_QUINT8 = DTypeConfig("quint8")
DYNAMIC_INT8 = DTypeConfig("quint8", "qint8", "float32", is_dynamic=True)
DYNAMIC_FP16 = DTypeConfig("float16", "float16", "float32", is_dynamic=True)
WEIGHT_ONLY_QUINT8 = DTypeConfig("float32", "quint8")
WEIGHT_ONLY_QUINT4X2 = DTypeConfig("float32", "quint4x2")
WEIGHT_ONLY_QINT8 = DTypeConfig("float32", "qint8")
INPUT_OUTPUT_ONLY_QUINT8 = DTypeConfig("quint8", "float32", "float32")
_XNNPACK_ACT = Constraint(scale_min=2.0**-12)
_XNNPACK_WEIGHT = Constraint(quant_min=-127, quant_max=127, scale_min=2.0**-12)
QNNPACK_WEIGHTED_QINT8 = DTypeConfig("qint8", "qint8", "float32", False, _XNNPACK_ACT, _XNNPACK_WEIGHT)
QNNPACK_DEFAULT_QINT8 = DTypeConfig("qint8", activation_constraint=_XNNPACK_ACT)


@frozen
class BackendDTypes:
    """The dtype configs a backend gives each family of ops (torch.ao's get_*_backend_config)."""

    conv: tuple[DTypeConfig, ...]
    linear: tuple[DTypeConfig, ...]
    binary: tuple[DTypeConfig, ...]
    default: tuple[DTypeConfig, ...]
    fixed: tuple[DTypeConfig, ...]
    rnn: tuple[DTypeConfig, ...]
    embedding: tuple[DTypeConfig, ...]
    layer_norm: tuple[DTypeConfig, ...]
    tensor_info: bool = True


_X86 = BackendDTypes(
    conv=(WEIGHTED_INT8,), linear=(WEIGHTED_INT8, DYNAMIC_INT8, DYNAMIC_FP16),
    binary=(WEIGHTED_INT8,), default=(DEFAULT_QUINT8,), fixed=(WEIGHTED_INT8,),
    rnn=(DYNAMIC_INT8, DYNAMIC_FP16), embedding=(WEIGHT_ONLY_QUINT8, WEIGHT_ONLY_QUINT4X2),
    layer_norm=(DEFAULT_QUINT8,),
)
_FBGEMM = BackendDTypes(
    conv=(WEIGHTED_INT8,), linear=(WEIGHTED_INT8, DYNAMIC_INT8, DYNAMIC_FP16),
    binary=(DEFAULT_QUINT8,), default=(DEFAULT_QUINT8,), fixed=(DEFAULT_QUINT8,),
    rnn=(DYNAMIC_INT8, DYNAMIC_FP16), embedding=(WEIGHT_ONLY_QUINT8, WEIGHT_ONLY_QUINT4X2),
    layer_norm=(DEFAULT_QUINT8,),
)
_QNNPACK = BackendDTypes(
    conv=(QNNPACK_WEIGHTED_QINT8, WEIGHTED_INT8),
    linear=(QNNPACK_WEIGHTED_QINT8, WEIGHTED_INT8, DYNAMIC_INT8, DYNAMIC_FP16),
    binary=(QNNPACK_DEFAULT_QINT8, DEFAULT_QUINT8), default=(QNNPACK_DEFAULT_QINT8, DEFAULT_QUINT8),
    fixed=(QNNPACK_DEFAULT_QINT8, DEFAULT_QUINT8), rnn=(DYNAMIC_INT8, DYNAMIC_FP16),
    embedding=(WEIGHT_ONLY_QUINT8, WEIGHT_ONLY_QUINT4X2),
    layer_norm=(QNNPACK_DEFAULT_QINT8, DEFAULT_QUINT8), tensor_info=False,
)
_ONEDNN = BackendDTypes(
    conv=(WEIGHTED_INT8,), linear=(WEIGHTED_INT8, DYNAMIC_INT8), binary=(DEFAULT_QUINT8,),
    default=(DEFAULT_QUINT8,), fixed=(DEFAULT_QUINT8,), rnn=(DYNAMIC_INT8,),
    embedding=(WEIGHT_ONLY_QINT8,), layer_norm=(INPUT_OUTPUT_ONLY_QUINT8,), tensor_info=False,
)
BACKENDS = {"x86": _X86, "fbgemm": _FBGEMM, "qnnpack": _QNNPACK, "onednn": _ONEDNN}


def _e(name: str, pattern: Pat, priority: int, observation: Observation, configs, handler: str, **kw) -> PatternEntry:
    # The source line is the family builder's line that wrote this entry.
    kw.setdefault("source", caller_source())
    return PatternEntry(name, pattern, priority, observation, tuple(configs), handler, **kw)


# --- families ---------------------------------------------------------------------------------
def conv_entries(d: int, cfg) -> list[PatternEntry]:
    """conv{d}d and conv_transpose{d}d: modules, QAT and fused modules, functional, + relu / bn.

    Fused entries accept purequant's fused modules (what `fuse` makes, named in
    `fused_module`) and torch.ao's intrinsic ones (models fused by torch.ao).
    """
    conv, convt, bn = module(f"{NN}Conv{d}d"), module(f"{NN}ConvTranspose{d}d"), module(f"{NN}BatchNorm{d}d")
    qat, func = f"{NNQAT}Conv{d}d", function(f"torch.conv{d}d")
    kinds = ("ReLU", "Bn", "BnReLU")
    ours = {k: f"{PQ}Conv{k}{d}d" for k in kinds}
    fused = {k: module(ours[k], f"{NNI}Conv{k}{d}d", f"{NNIQAT}Conv{k}{d}d") for k in kinds}
    fqat = {k: f"{NNIQAT}Conv{k}{d}d" for k in kinds}
    mw = {"module_weight": True}
    return [
        _e(f"conv{d}d", Pat(conv | module(qat)), P1, OWN, cfg, "conv", qat_module=qat, **mw),
        _e(f"conv{d}d_functional", Pat(func), P1, OWN, cfg, "conv", **FUNCTIONAL_WEIGHTS),
        _e(f"conv{d}d_relu", seq(conv, RELU), P2, OWN, cfg, "conv", fused_module=ours["ReLU"], qat_module=fqat["ReLU"], **mw),
        _e(f"conv{d}d_functional_relu", seq(func, RELU), P2, OWN, cfg, "conv", **FUNCTIONAL_WEIGHTS),
        _e(f"conv{d}d_bn", seq(conv, bn), P2, OWN, cfg, "conv", fused_module=ours["Bn"], qat_module=fqat["Bn"], **mw),
        _e(f"conv{d}d_bn_relu", seq(conv, bn, RELU), P3, OWN, cfg, "conv", fused_module=ours["BnReLU"], qat_module=fqat["BnReLU"], **mw),
        _e(f"conv{d}d_relu_fused", Pat(fused["ReLU"]), P1, OWN, cfg, "conv", qat_module=fqat["ReLU"], **mw),
        _e(f"conv{d}d_bn_fused", Pat(fused["Bn"]), P1, OWN, cfg, "conv", qat_module=fqat["Bn"], **mw),
        _e(f"conv{d}d_bn_relu_fused", Pat(fused["BnReLU"]), P1, OWN, cfg, "conv", qat_module=fqat["BnReLU"], **mw),
        _e(f"conv_transpose{d}d", Pat(convt), P1, OWN, cfg, "conv_transpose", **mw),
        _e(f"conv_transpose{d}d_bn", seq(convt, bn), P2, OWN, cfg, "conv_transpose", note="fuse folds the bn into the transposed conv itself", **mw),
        _e(f"conv_transpose{d}d_functional", Pat(function(f"torch.conv_transpose{d}d")), P1, OWN, cfg, "conv_transpose", **FUNCTIONAL_WEIGHTS),
    ]


def linear_entries(cfg) -> list[PatternEntry]:
    """Linear: module, QAT, functional, + relu, + bn1d, and their fused modules."""
    lin, qat, func, bn = module(NN + "Linear"), NNQAT + "Linear", function(F + "linear"), module(NN + "BatchNorm1d")
    relu_q, bn_q = NNIQAT + "LinearReLU", NNIQAT + "LinearBn1d"
    relu_f = module(PQ + "LinearReLU", NNI + "LinearReLU", relu_q)
    bn_f = module(PQ + "LinearBn1d", NNI + "LinearBn1d", bn_q)
    mw = {"module_weight": True}
    return [
        _e("linear", Pat(lin | module(qat)), P1, OWN, cfg, "linear", qat_module=qat, **mw),
        _e("linear_functional", Pat(func), P1, OWN, cfg, "linear", **FUNCTIONAL_WEIGHTS),
        _e("linear_relu", seq(lin, RELU), P2, OWN, cfg, "linear", fused_module=PQ + "LinearReLU", qat_module=relu_q, **mw),
        _e("linear_functional_relu", seq(func, RELU), P2, OWN, cfg, "linear", **FUNCTIONAL_WEIGHTS),
        _e("linear_bn", seq(lin, bn), P2, OWN, cfg, "linear", fused_module=PQ + "LinearBn1d", qat_module=bn_q, **mw),
        _e("linear_relu_fused", Pat(relu_f), P1, OWN, cfg, "linear", qat_module=relu_q, **mw),
        _e("linear_bn_fused", Pat(bn_f), P1, OWN, cfg, "linear", qat_module=bn_q, **mw),
    ]


def binary_entries(cfg) -> list[PatternEntry]:
    """add/mul (operator and torch spellings, + relu), matmul, bmm; tensor-scalar forms share."""
    out = []
    for name in ("add", "mul"):
        op = function(f"operator.{name}", f"torch.{name}")
        out.append(_e(name, Pat(op), P1, OWN, cfg, "binary_op", by_tensor_args=BY_TENSOR_ARGS))
        out.append(_e(f"{name}_relu", seq(op, RELU_BINARY), P2, OWN, cfg, "binary_op", by_tensor_args=BY_TENSOR_ARGS))
    out.append(_e("matmul", Pat(function("torch.matmul")), P1, OWN, cfg, "matmul"))
    out.append(_e("bmm", Pat(function("torch.bmm")), P1, OWN, cfg, "matmul", note="not in torch.ao's x86 config"))
    return out


# name -> (op, note); every one SHARES its input's observer. torch.ao's list, plus extras.
_SHARED = {
    "adaptive_avg_pool1d": (module(NN + "AdaptiveAvgPool1d") | function("torch.adaptive_avg_pool1d"), ""),
    "adaptive_avg_pool2d": (module(NN + "AdaptiveAvgPool2d") | function(F + "adaptive_avg_pool2d"), ""),
    "adaptive_avg_pool3d": (module(NN + "AdaptiveAvgPool3d") | function(F + "adaptive_avg_pool3d"), ""),
    "avg_pool1d": (module(NN + "AvgPool1d") | function("torch.avg_pool1d"), ""),
    "avg_pool2d": (module(NN + "AvgPool2d") | function(F + "avg_pool2d"), ""),
    "avg_pool3d": (module(NN + "AvgPool3d") | function(F + "avg_pool3d"), ""),
    "max_pool1d": (module(NN + "MaxPool1d") | function(F + "max_pool1d"), ""),
    "max_pool2d": (module(NN + "MaxPool2d") | function(F + "max_pool2d"), ""),
    "max_pool3d": (module(NN + "MaxPool3d") | function(F + "max_pool3d"), ""),
    "hardtanh": (module(NN + "Hardtanh") | function(F + "hardtanh", F + "hardtanh_"), ""),
    "relu": (RELU | method("relu", "relu_") | function("torch.relu"), "torch.relu: not in torch.ao"),
    "relu6": (module(NN + "ReLU6") | function(F + "relu6"), ""),
    "clamp": (function("torch.clamp") | method("clamp"), ""),
    "identity": (module(NN + "Identity"), ""),
    "pixel_shuffle": (module(NN + "PixelShuffle") | function("torch.pixel_shuffle"), ""),
    "pixel_unshuffle": (module(NN + "PixelUnshuffle") | function("torch.pixel_unshuffle"), ""),
    "interpolate": (
        function(F + "interpolate", F + "upsample", F + "upsample_nearest", F + "upsample_bilinear")
        | module(NN + "Upsample", NN + "UpsamplingNearest2d", NN + "UpsamplingBilinear2d"),
        "upsample spellings: not in torch.ao",
    ),
    "flatten": (function("torch.flatten") | method("flatten") | module(NN + "Flatten"), "x.flatten(), nn.Flatten: not in torch.ao"),
    "mean": (function("torch.mean") | method("mean"), ""),
    "narrow": (function("torch.narrow"), ""),
    "repeat": (method("repeat"), ""),
    "repeat_interleave": (function("torch.repeat_interleave") | method("repeat_interleave"), ""),
    "transpose": (function("torch.transpose") | method("transpose"), ""),
    "permute": (method("permute") | function("torch.permute"), "torch.permute: not in torch.ao"),
    "squeeze": (function("torch.squeeze") | method("squeeze", "squeeze_"), ""),
    "unsqueeze": (function("torch.unsqueeze") | method("unsqueeze", "unsqueeze_"), ""),
    "reshape": (method("reshape") | function("torch.reshape"), "torch.reshape: not in torch.ao"),
    "view": (method("view"), ""),
    "resize": (method("resize_"), ""),
    "contiguous": (method("contiguous"), ""),
    "detach": (method("detach", "detach_"), ""),
    "floordiv": (function("operator.floordiv"), ""),
    "chunk": (function("torch.chunk") | method("chunk"), "not in torch.ao; its output tuple shares"),
    "split": (function("torch.split") | method("split"), "not in torch.ao; its output tuple shares"),
}


def shared_entries(cfg) -> list[PatternEntry]:
    """Ops whose output shares its input's observer: pools, reshapes, relu/clamp, cat, stack."""
    out = [_e(name, Pat(op), P1, SHARES, cfg, "shares_qparams", note=note) for name, (op, note) in _SHARED.items()]
    out.append(_e("cat", Pat(function("torch.cat")), P1, SHARES, cfg, "cat", shares_all_inputs=True))
    out.append(_e("stack", Pat(function("torch.stack")), P1, SHARES, cfg, "cat", shares_all_inputs=True))
    out.append(_e(
        "getitem", Pat(function("operator.getitem")), P1, SHARES, cfg, "shares_qparams",
        observe_inputs=False, note="not in torch.ao; shares only an input that is already observed",
    ))
    return out


def fixed_entries(cfg) -> list[PatternEntry]:
    """Ops with a known output range: sigmoid, hardsigmoid, softmax to [0, 1], tanh to [-1, 1]."""
    rows = {
        "hardsigmoid": (module(NN + "Hardsigmoid") | function(F + "hardsigmoid") | method("hardsigmoid", "hardsigmoid_"), FIXED_0_TO_1),
        "sigmoid": (module(NN + "Sigmoid") | function("torch.sigmoid", F + "sigmoid") | method("sigmoid", "sigmoid_"), FIXED_0_TO_1),
        "softmax": (module(NN + "Softmax"), FIXED_0_TO_1),
        "tanh": (module(NN + "Tanh") | function("torch.tanh", F + "tanh") | method("tanh", "tanh_"), FIXED_NEG1_TO_1),
    }
    return [_e(n, Pat(op), P1, FIXED, cfg, "fixed_qparams", fixed_qparams=q) for n, (op, q) in rows.items()]


def default_op_entries(cfg, layer_norm_cfg) -> list[PatternEntry]:
    """Ops with an observer of their own: elu, hardswish, leaky_relu, dropout, prelu, norms."""
    act = {"input_args": (0,), "quantize_weight": False}
    return [
        _e("elu", Pat(module(NN + "ELU") | function(F + "elu")), P1, OWN, cfg, "default_op"),
        _e("hardswish", Pat(module(NN + "Hardswish") | function(F + "hardswish")), P1, OWN, cfg, "default_op"),
        _e("leaky_relu", Pat(module(NN + "LeakyReLU") | function(F + "leaky_relu")), P1, OWN, cfg, "default_op"),
        _e("dropout", Pat(module(NN + "Dropout") | function(F + "dropout")), P1, OWN, cfg, "default_op"),
        _e("prelu", Pat(module(NN + "PReLU")), P1, OWN, cfg, "default_op", module_weight=True),
        _e("instance_norm", Pat(module(*(f"{NN}InstanceNorm{d}d" for d in (1, 2, 3)))), P1, OWN, cfg, "norm"),
        _e("instance_norm_functional", Pat(function(F + "instance_norm")), P1, OWN, cfg, "norm", weight_arg=(3, "weight"), bias_arg=(4, "bias"), **act),
        _e("group_norm", Pat(module(NN + "GroupNorm")), P1, OWN, cfg, "norm", note="not in torch.ao's x86 config"),
        _e("group_norm_functional", Pat(function(F + "group_norm")), P1, OWN, cfg, "norm", weight_arg=(2, "weight"), bias_arg=(3, "bias"), **act),
        _e("layer_norm", Pat(module(NN + "LayerNorm")), P1, OWN, layer_norm_cfg, "norm"),
        _e("layer_norm_functional", Pat(function(F + "layer_norm")), P1, OWN, layer_norm_cfg, "norm", weight_arg=(2, "weight"), bias_arg=(3, "bias"), **act),
    ]


def batch_norm_entries(cfg) -> list[PatternEntry]:
    """BatchNorm2d/3d alone, + relu, and the fused BNReLU modules."""
    out = [_e("batch_norm", Pat(module(NN + "BatchNorm2d", NN + "BatchNorm3d")), P1, OWN, cfg, "batch_norm")]
    for d in (2, 3):
        fused = f"{NNI}BNReLU{d}d"
        out.append(_e(f"batch_norm{d}d_relu", seq(module(f"{NN}BatchNorm{d}d"), RELU), P2, OWN, cfg, "batch_norm", fused_module=fused))
        out.append(_e(f"batch_norm{d}d_relu_fused", Pat(module(fused)), P1, OWN, cfg, "batch_norm"))
    return out


def rnn_entries(cfg) -> list[PatternEntry]:
    """LSTM, GRU and the cells: dynamic quantization only (weights observed, no activations)."""
    names = {"lstm": "LSTM", "gru": "GRU", "lstm_cell": "LSTMCell", "gru_cell": "GRUCell", "rnn_cell": "RNNCell"}
    return [_e(n, Pat(module(NN + cls)), P1, OWN, cfg, "rnn_dynamic", module_weight=True) for n, cls in names.items()]


def embedding_entries(cfg) -> list[PatternEntry]:
    """Embedding and EmbeddingBag: weight-only; indices and output stay as they are."""
    out = []
    for name, cls in (("embedding", "Embedding"), ("embedding_bag", "EmbeddingBag")):
        op = module(NN + cls, NNQAT + cls)
        out.append(_e(name, Pat(op), P1, NONE, cfg, "embedding", input_args=(), module_weight=True, qat_module=NNQAT + cls))
    return out


def tensor_info_entries(cfg) -> list[PatternEntry]:
    """size and shape: read a tensor's metadata; nothing observed."""
    return [_e(n, Pat(method(n)), P1, NONE, cfg, "tensor_info", input_args=()) for n in ("size", "shape")]

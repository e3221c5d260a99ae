"""Backend default qconfigs and specs, as purequant values.

These are our own values, written out field by field; they mirror torch.ao 2.13's
`get_default_qconfig`, `get_default_qconfig_mapping` (qconfig_mapping.py) and the default tables of
`quantize_dynamic` (quantize.py). tests/test_qconfig.py reads torch.ao's observers and checks
every field, so a drift in either shows up there.

Object-type keys are written in canonical form (`purequant.qconfig.names`): e.g.
`F.conv_transpose1d` *is* `torch.conv_transpose1d`, so its key is "torch.conv_transpose1d".
"""

from __future__ import annotations

from pyrsistent import pmap

from purequant.observers.spec import ObserverSpec
from purequant.qconfig.errors import QConfigError
from purequant.qconfig.spec import QConfig, QConfigSpec

BACKENDS = ("x86", "fbgemm", "qnnpack", "onednn")

# --- observer specs --------------------------------------------------------------------------

_HISTOGRAM_OPTIONS = pmap({"bins": 2048, "upsample_rate": 16})
# PTQ activations: HistogramObserver over quint8; x86/fbgemm narrow to 7 bits for 16-bit
# accumulating (non-VNNI) kernels.
HISTOGRAM = ObserverSpec("histogram", options=_HISTOGRAM_OPTIONS)
HISTOGRAM_REDUCED = ObserverSpec("histogram", reduce_range=True, options=_HISTOGRAM_OPTIONS)
# Weights: signed 8-bit symmetric, per tensor or per output channel.
WEIGHT_PER_TENSOR = ObserverSpec("minmax", dtype="qint8", qscheme="per_tensor_symmetric")
WEIGHT_PER_CHANNEL = ObserverSpec(
    "per_channel_minmax", dtype="qint8", qscheme="per_channel_symmetric"
)
# MinMaxObserver with its defaults (quint8, affine): torch.ao's PReLU weight.
MINMAX_QUINT8 = ObserverSpec("minmax")
# Dynamic activations: qparams computed at run time by the kernel.
DYNAMIC_ACTIVATION = ObserverSpec("placeholder", quant_min=0, quant_max=255, is_dynamic=True)
FLOAT16_DYNAMIC_ACTIVATION = ObserverSpec("placeholder", dtype="float16", is_dynamic=True)
FLOAT16_PLACEHOLDER = ObserverSpec("placeholder", dtype="float16")
FLOAT32_PLACEHOLDER = ObserverSpec("placeholder", dtype="float32")
FLOAT16_NOOP = ObserverSpec("noop", dtype="float16")
# Output re-uses the input's observer (reshape). Encoded as a noop with an option until the
# observers layer has a kind of its own for it.
REUSE_INPUT = ObserverSpec("noop", dtype="quint8", options={"reuse_input": True})
# Embedding weights: per-row scale and float zero point.
EMBEDDING_WEIGHT_8BIT = ObserverSpec(
    "per_channel_minmax", dtype="quint8", qscheme="per_channel_affine_float_qparams", ch_axis=0
)
EMBEDDING_WEIGHT_4BIT = ObserverSpec(
    "per_channel_minmax", dtype="quint4x2", qscheme="per_channel_affine_float_qparams", ch_axis=0
)
# Ops whose output range is known: qparams fixed in advance.
FIXED_0_TO_1 = ObserverSpec(
    "fixed", quant_min=0, quant_max=255, options={"scale": 1.0 / 256.0, "zero_point": 0}
)
FIXED_NEG1_TO_1 = ObserverSpec(
    "fixed", quant_min=0, quant_max=255, options={"scale": 2.0 / 256.0, "zero_point": 128}
)

# --- qconfigs --------------------------------------------------------------------------------

DEFAULT_DYNAMIC = QConfig(DYNAMIC_ACTIVATION, WEIGHT_PER_TENSOR, name="default_dynamic_qconfig")
PER_CHANNEL_DYNAMIC = QConfig(
    DYNAMIC_ACTIVATION, WEIGHT_PER_CHANNEL, name="per_channel_dynamic_qconfig"
)
FLOAT16_DYNAMIC = QConfig(
    FLOAT16_DYNAMIC_ACTIVATION, FLOAT16_PLACEHOLDER, name="float16_dynamic_qconfig"
)
FLOAT16_STATIC = QConfig(FLOAT16_PLACEHOLDER, FLOAT16_PLACEHOLDER, name="float16_static_qconfig")
EMBEDDING_8BIT = QConfig(
    FLOAT32_PLACEHOLDER, EMBEDDING_WEIGHT_8BIT, name="float_qparams_weight_only_qconfig"
)
EMBEDDING_4BIT = QConfig(
    FLOAT32_PLACEHOLDER, EMBEDDING_WEIGHT_4BIT, name="float_qparams_weight_only_qconfig_4bit"
)
REUSE_INPUT_QCONFIG = QConfig(REUSE_INPUT, FLOAT16_NOOP, name="default_reuse_input_qconfig")
QUINT8_WEIGHT = QConfig(HISTOGRAM, MINMAX_QUINT8, name="default_quint8_weight_qconfig")
FIXED_QPARAMS_0_TO_1 = QConfig(FIXED_0_TO_1, WEIGHT_PER_TENSOR, name="fixed_qparams_0_to_1")
FIXED_QPARAMS_NEG1_TO_1 = QConfig(
    FIXED_NEG1_TO_1, WEIGHT_PER_TENSOR, name="fixed_qparams_neg1_to_1"
)

# Modules quantize_dynamic quantizes by default.
DYNAMIC_MODULES = (
    "torch.nn.Linear",
    "torch.nn.LSTM",
    "torch.nn.GRU",
    "torch.nn.LSTMCell",
    "torch.nn.RNNCell",
    "torch.nn.GRUCell",
)

# Ops with a known output range, as torch.ao's default mapping lists them (F.softmax is absent
# there, so it is absent here).
FIXED_QPARAMS_OPS = {
    "torch.nn.Hardsigmoid": FIXED_QPARAMS_0_TO_1,
    "torch.nn.functional.hardsigmoid": FIXED_QPARAMS_0_TO_1,
    "hardsigmoid": FIXED_QPARAMS_0_TO_1,
    "hardsigmoid_": FIXED_QPARAMS_0_TO_1,
    "torch.nn.Sigmoid": FIXED_QPARAMS_0_TO_1,
    "torch.sigmoid": FIXED_QPARAMS_0_TO_1,
    "sigmoid": FIXED_QPARAMS_0_TO_1,
    "sigmoid_": FIXED_QPARAMS_0_TO_1,
    "torch.nn.Softmax": FIXED_QPARAMS_0_TO_1,
    "torch.nn.Tanh": FIXED_QPARAMS_NEG1_TO_1,
    "torch.tanh": FIXED_QPARAMS_NEG1_TO_1,
    "tanh": FIXED_QPARAMS_NEG1_TO_1,
    "tanh_": FIXED_QPARAMS_NEG1_TO_1,
}

_CONV_TRANSPOSE = (
    "torch.nn.ConvTranspose1d",
    "torch.nn.ConvTranspose2d",
    "torch.nn.ConvTranspose3d",
    "torch.conv_transpose1d",
    "torch.conv_transpose2d",
    "torch.conv_transpose3d",
)


def backend_default_qconfig(backend: str = "x86") -> QConfig:
    """The default post-training static qconfig of a backend (torch.ao `get_default_qconfig`)."""
    _check_backend(backend)
    if backend in ("x86", "fbgemm"):
        return QConfig(HISTOGRAM_REDUCED, WEIGHT_PER_CHANNEL, name=f"default_qconfig({backend})")
    if backend == "qnnpack":
        return QConfig(HISTOGRAM, WEIGHT_PER_TENSOR, name="default_qconfig(qnnpack)")
    # onednn: full-range activations. Exact on VNNI CPUs; torch.ao warns of possible
    # saturation on CPUs without VNNI.
    return QConfig(HISTOGRAM, WEIGHT_PER_CHANNEL, name="default_qconfig(onednn)")


def default_qconfig_spec(backend: str = "x86") -> QConfigSpec:
    """The default static spec of a backend (torch.ao `get_default_qconfig_mapping`).

    Global: `backend_default_qconfig(backend)`. Object types: `reshape` re-uses its input's observer;
    transposed convolutions get per-tensor weights on x86/fbgemm (no per-channel kernel);
    layer_norm/LayerNorm keep float weights; PReLU gets quint8 weights; sigmoid, tanh,
    hardsigmoid and Softmax get fixed qparams.
    """
    qc = backend_default_qconfig(backend)
    transpose = QConfig(qc.activation, WEIGHT_PER_TENSOR) if backend in ("x86", "fbgemm") else qc
    layernorm = QConfig(qc.activation, FLOAT32_PLACEHOLDER)
    object_type = {"reshape": REUSE_INPUT_QCONFIG}
    object_type.update(dict.fromkeys(_CONV_TRANSPOSE, transpose))
    object_type.update(
        dict.fromkeys(("torch.nn.functional.layer_norm", "torch.nn.LayerNorm"), layernorm)
    )
    object_type["torch.nn.PReLU"] = QUINT8_WEIGHT
    object_type.update(FIXED_QPARAMS_OPS)
    return QConfigSpec(global_qconfig=qc, object_type=pmap(object_type))


def default_dynamic_qconfig_spec(*, per_channel: bool = False) -> QConfigSpec:
    """Dynamic int8 for Linear and the RNN modules (torch.ao `quantize_dynamic` with qint8).

    Args:
        per_channel: per-channel weights (torch.ao `per_channel_dynamic_qconfig`).
    """
    qc = PER_CHANNEL_DYNAMIC if per_channel else DEFAULT_DYNAMIC
    return QConfigSpec(object_type=pmap(dict.fromkeys(DYNAMIC_MODULES, qc)))


def float16_qconfig_spec() -> QConfigSpec:
    """Dynamic fp16 for Linear and the RNN modules (torch.ao `quantize_dynamic` with float16)."""
    return QConfigSpec(object_type=pmap(dict.fromkeys(DYNAMIC_MODULES, FLOAT16_DYNAMIC)))


def embedding_qconfig_spec(bits: int = 8) -> QConfigSpec:
    """Weight-only embedding quantization with float qparams (torch.ao `quantize_dynamic`).

    Args:
        bits: 8 (quint8: Embedding and EmbeddingBag) or 4 (quint4x2: EmbeddingBag only, as
            torch.ao has 4-bit kernels for EmbeddingBag alone).
    """
    if bits == 8:
        return QConfigSpec(
            object_type=pmap(
                dict.fromkeys(("torch.nn.Embedding", "torch.nn.EmbeddingBag"), EMBEDDING_8BIT)
            )
        )
    if bits == 4:
        return QConfigSpec(object_type=pmap({"torch.nn.EmbeddingBag": EMBEDDING_4BIT}))
    raise QConfigError(f"embedding_qconfig_spec: bits must be 8 or 4, got {bits!r}")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise QConfigError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")

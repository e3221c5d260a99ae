"""Observer and quantization specs: frozen plain data, no torch objects.

An `ObserverSpec` says *how* a value's statistics are gathered and turned into qparams; it is the
unit a qconfig is made of (activation spec, weight spec). Specs are hashable, comparable and
serialise to JSON, so records can carry them.
"""

from __future__ import annotations

from typing import Any

from attrs import field, frozen
from pyrsistent import PMap, pmap

from ..ir.node import as_pmap

# Observer kinds. "placeholder" marks a dynamically quantized activation (qparams are computed at
# run time by the kernel); "fixed" carries qparams known in advance (sigmoid, tanh, softmax...);
# "noop" keeps a dtype tag (fp16 activations) without statistics.
OBSERVER_KINDS = frozenset(
    {
        "minmax",
        "moving_average_minmax",
        "per_channel_minmax",
        "moving_average_per_channel_minmax",
        "histogram",
        "percentile",
        "mse",
        "entropy",
        "placeholder",
        "fixed",
        "noop",
    }
)

DTYPES = frozenset({"quint8", "qint8", "qint32", "quint4x2", "float16", "float32"})

QSCHEMES = frozenset(
    {
        "per_tensor_affine",
        "per_tensor_symmetric",
        "per_channel_affine",
        "per_channel_symmetric",
        "per_channel_affine_float_qparams",
    }
)



@frozen
class ObserverSpec:
    """How one value is observed and quantized.

    Attributes:
        kind: one of OBSERVER_KINDS.
        dtype: quantized dtype name, one of DTYPES.
        qscheme: one of QSCHEMES.
        quant_min: lowest integer value (None: the dtype's full range, narrowed by reduce_range).
            A given range is the effective one: reduce_range does not halve it again.
        quant_max: highest integer value.
        reduce_range: use one bit less of range (for kernels that accumulate in 16 bits).
        ch_axis: channel axis for per-channel kinds.
        is_dynamic: qparams computed at run time (dynamic quantization).
        eps: smallest scale allowed.
        options: kind-specific options, e.g. averaging_constant, bins, upsample_rate,
            percentile, scale/zero_point for "fixed".
    """

    kind: str
    dtype: str = "quint8"
    qscheme: str = "per_tensor_affine"
    quant_min: int | None = None
    quant_max: int | None = None
    reduce_range: bool = False
    ch_axis: int = 0
    is_dynamic: bool = False
    eps: float = 1.1920928955078125e-07  # torch.finfo(torch.float32).eps
    options: PMap = field(factory=pmap, converter=as_pmap)

    def __attrs_post_init__(self) -> None:
        if self.kind not in OBSERVER_KINDS:
            raise ValueError(f"unknown observer kind {self.kind!r}; expected one of {sorted(OBSERVER_KINDS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {sorted(DTYPES)}")
        if self.qscheme not in QSCHEMES:
            raise ValueError(f"unknown qscheme {self.qscheme!r}; expected one of {sorted(QSCHEMES)}")

    @property
    def per_channel(self) -> bool:
        return self.qscheme.startswith("per_channel")

    @property
    def symmetric(self) -> bool:
        return self.qscheme.endswith("symmetric")

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dtype": self.dtype,
            "qscheme": self.qscheme,
            "quant_min": self.quant_min,
            "quant_max": self.quant_max,
            "reduce_range": self.reduce_range,
            "ch_axis": self.ch_axis,
            "is_dynamic": self.is_dynamic,
            "eps": self.eps,
            "options": dict(sorted(self.options.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObserverSpec:
        return cls(**{**data, "options": pmap(data.get("options", {}))})


@frozen
class QParams:
    """Quantization parameters for one value: plain numbers, JSON-serialisable.

    Per-tensor qparams have one-element `scale` and `zero_point` and `axis` None. Zero points are
    ints, except for `per_channel_affine_float_qparams`, whose zero points are floats.
    """

    dtype: str
    qscheme: str
    scale: tuple[float, ...]
    zero_point: tuple[int, ...] | tuple[float, ...]
    quant_min: int
    quant_max: int
    axis: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "qscheme": self.qscheme,
            "scale": list(self.scale),
            "zero_point": list(self.zero_point),
            "quant_min": self.quant_min,
            "quant_max": self.quant_max,
            "axis": self.axis,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QParams:
        return cls(
            dtype=data["dtype"],
            qscheme=data["qscheme"],
            scale=tuple(data["scale"]),
            zero_point=tuple(data["zero_point"]),
            quant_min=data["quant_min"],
            quant_max=data["quant_max"],
            axis=data["axis"],
        )

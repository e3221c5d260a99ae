"""The two lowering targets' vocabularies: how a value is quantized, dequantized, and weighed.

* `NATIVE`: torch's quantized tensors (`torch.quantize_per_tensor`, `torch.dequantize`,
  `torch.quantize_per_channel` for weights); quantized kernels read and write them.
* `REFERENCE`: plain integer tensors through the decomposed ops
  (`torch.ops.quantized_decomposed.quantize_per_tensor` -> uint8/int8 tensor, and back), so the
  graph runs anywhere and exports with torch.export; float ops run between them.

Scalars (scale, zero point, ranges) are constants in node args; per-channel scales and zero
points are new params entries read by get_attr.
"""

from __future__ import annotations

from typing import Any

import torch
from attrs import frozen

from ..ir import Ref, Sym
from ..observers import QParams

QD = "torch.ops.quantized_decomposed."
# Quantized dtype -> the torch dtype of a native quantized tensor / of its integer values.
_QTYPE = {"quint8": "torch.quint8", "qint8": "torch.qint8", "qint32": "torch.qint32", "quint4x2": "torch.quint4x2"}
_INT = {"quint8": "torch.uint8", "qint8": "torch.int8", "qint32": "torch.int32"}
# Integer limits the reference target clamps to: the dtype's, not the observer's (a
# reduce_range observer's 0..127). Native kernels saturate at the dtype's limits too, so both
# targets agree on values beyond the calibrated range.
_LIMITS = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-(2**31), 2**31 - 1)}


@frozen
class Weight:
    """A weight to quantize: where it is read, its name, and its qparams (computed from params).

    Attributes:
        ref: the float weight in the new graph (a get_attr, or the copied value).
        name: a path-like name for new params entries (`layer1.0.conv1.weight`).
        qp: its qparams.
    """

    ref: Ref
    name: str
    qp: QParams


def _channel_tensors(sw: Any, w: Weight, scale_dtype: torch.dtype) -> tuple[Ref, Ref]:
    zp_dtype = torch.float32 if w.qp.qscheme.endswith("float_qparams") else torch.int64
    scales = sw.new_param(f"{w.name}_scale", torch.tensor(w.qp.scale, dtype=scale_dtype))
    zps = sw.new_param(f"{w.name}_zero_point", torch.tensor(w.qp.zero_point, dtype=zp_dtype))
    return scales, zps


@frozen
class Native:
    """Quantized tensors and torch's quantized CPU kernels."""

    name: str = "native"

    def quantize(self, sw: Any, x: Any, qp: QParams, *, nid: str | None = None) -> Ref:
        return sw.call("torch.quantize_per_tensor", x, qp.scale[0], qp.zero_point[0],
                       Sym(_QTYPE[qp.dtype]), nid=nid, prefix="quantize_per_tensor")

    def dequantize(self, sw: Any, qv: Any, *, prefix: str = "dequantize") -> Ref:
        return sw.call("torch.dequantize", qv.ref, prefix=prefix)

    def quantize_weight(self, sw: Any, w: Weight) -> Ref:
        """The weight as a quantized tensor (what prepack ops and `quantized.prelu` take)."""
        return sw.cached(("native", w), lambda: self._quantize_weight(sw, w))

    def _quantize_weight(self, sw: Any, w: Weight) -> Ref:
        qp, dtype = w.qp, Sym(_QTYPE[w.qp.dtype])
        if qp.axis is None:
            return sw.call("torch.quantize_per_tensor", w.ref, qp.scale[0], qp.zero_point[0], dtype,
                           prefix=f"{w.name}_quantized")
        scales, zps = _channel_tensors(sw, w, torch.float64)
        return sw.call("torch.quantize_per_channel", w.ref, scales, zps, qp.axis, dtype,
                       prefix=f"{w.name}_quantized")


@frozen
class Reference:
    """Integer tensors through the decomposed quantize/dequantize ops; float ops in between."""

    name: str = "reference"

    def quantize(self, sw: Any, x: Any, qp: QParams, *, nid: str | None = None) -> Ref:
        return sw.call(QD + "quantize_per_tensor", x, qp.scale[0], qp.zero_point[0], *_LIMITS[qp.dtype],
                       Sym(_INT[qp.dtype]), nid=nid, prefix="quantize_per_tensor")

    def dequantize(self, sw: Any, qv: Any, *, prefix: str = "dequantize") -> Ref:
        qp = qv.qp
        return sw.call(QD + "dequantize_per_tensor", qv.ref, qp.scale[0], qp.zero_point[0],
                       *_LIMITS[qp.dtype], Sym(_INT[qp.dtype]), prefix=prefix)

    def weight_float(self, sw: Any, w: Weight) -> Ref:
        """quantize -> dequantize of the weight: `fold_weights` turns the first into an int8
        constant, so the model stores integer weights and dequantizes them as it runs."""
        return sw.cached(("reference", w), lambda: self._weight_float(sw, w))

    def _weight_float(self, sw: Any, w: Weight) -> Ref:
        qp, dtype = w.qp, Sym(_INT[w.qp.dtype])
        rng = (*_LIMITS[qp.dtype], dtype)
        if qp.axis is None:
            q = sw.call(QD + "quantize_per_tensor", w.ref, qp.scale[0], qp.zero_point[0], *rng,
                        prefix=f"{w.name}_quantized")
            return sw.call(QD + "dequantize_per_tensor", q, qp.scale[0], qp.zero_point[0], *rng,
                           prefix=f"{w.name}_dq")
        scales, zps = _channel_tensors(sw, w, torch.float32)
        q = sw.call(QD + "quantize_per_channel", w.ref, scales, zps, qp.axis, *rng,
                    prefix=f"{w.name}_quantized")
        return sw.call(QD + "dequantize_per_channel", q, scales, zps, qp.axis, *rng,
                       prefix=f"{w.name}_dq")


NATIVE, REFERENCE = Native(), Reference()
DIALECTS = {"native": NATIVE, "reference": REFERENCE}

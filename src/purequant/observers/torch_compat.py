"""Read a torch.ao observer (class, instance, `with_args` partial, FakeQuantize) into a spec.

torch.ao.quantization is imported lazily: it is deprecated upstream and only needed here.
Classes and partials are instantiated once (cheap: a few buffers) so that torch.ao itself
resolves defaults, nested `with_args` and callable args; the instance is then read.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import ObserverConfigError
from .spec import ObserverSpec

_DTYPES = {
    torch.quint8: "quint8", torch.qint8: "qint8", torch.qint32: "qint32",
    torch.quint4x2: "quint4x2", torch.float16: "float16", torch.float32: "float32",
    # Plain integer dtypes compute the same qparams as their quantized counterparts.
    torch.uint8: "quint8", torch.int8: "qint8", torch.int32: "qint32",
}
_QSCHEMES = {
    torch.per_tensor_affine: "per_tensor_affine",
    torch.per_tensor_symmetric: "per_tensor_symmetric",
    torch.per_channel_affine: "per_channel_affine",
    torch.per_channel_symmetric: "per_channel_symmetric",
    torch.per_channel_affine_float_qparams: "per_channel_affine_float_qparams",
}


def _instance(obs_or_partial: Any) -> Any:
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    obj = obs_or_partial
    if not isinstance(obj, (ObserverBase, FakeQuantizeBase)):
        try:
            obj = obj()
        except TypeError as e:
            raise ObserverConfigError(
                f"cannot instantiate {obs_or_partial!r} to read it ({e}); pass an instance or "
                "a .with_args(...) partial with all required arguments"
            ) from None
    if isinstance(obj, FakeQuantizeBase):
        obj = obj.activation_post_process
    if not isinstance(obj, ObserverBase):
        raise ObserverConfigError(f"{obs_or_partial!r} is not a torch.ao observer or FakeQuantize")
    return obj


def _kind(obs: Any) -> tuple[str, dict[str, Any]]:
    from torch.ao.quantization import observer as o

    # Most specific classes first: the moving averages subclass the plain min/max observers.
    if isinstance(obs, o.MovingAveragePerChannelMinMaxObserver):
        return "moving_average_per_channel_minmax", {"averaging_constant": obs.averaging_constant}
    if isinstance(obs, o.PerChannelMinMaxObserver):
        return "per_channel_minmax", {}
    if isinstance(obs, o.MovingAverageMinMaxObserver):
        return "moving_average_minmax", {"averaging_constant": obs.averaging_constant}
    if isinstance(obs, o.MinMaxObserver):
        return "minmax", {}
    if isinstance(obs, o.HistogramObserver):
        return "histogram", {"bins": obs.bins, "upsample_rate": obs.upsample_rate}
    if isinstance(obs, o.FixedQParamsObserver):
        return "fixed", {"scale": float(obs.scale.item()), "zero_point": int(obs.zero_point.item())}
    if isinstance(obs, o.PlaceholderObserver):
        return "placeholder", {}
    if isinstance(obs, o.NoopObserver):
        return "noop", {}
    raise ObserverConfigError(
        f"{type(obs).__name__} has no purequant equivalent (supported: MinMax, MovingAverageMinMax, "
        "PerChannelMinMax, MovingAveragePerChannelMinMax, Histogram, FixedQParams, Placeholder, Noop)"
    )


def _lookup(table: dict, key: Any, what: str) -> str:
    if key not in table:
        raise ObserverConfigError(f"unsupported {what} {key!r}; supported: {sorted(map(str, table))}")
    return table[key]


def from_torch_observer(obs_or_partial: Any) -> ObserverSpec:
    """The ObserverSpec equivalent to a torch.ao observer or FakeQuantize.

    Reads a class, an instance or a `with_args` partial of either. A customized quant range is
    recorded as the instance's final quant_min/quant_max with reduce_range=False (torch.ao has
    already halved it), which gives the same qparams. Returns a new spec. Raises
    ObserverConfigError for observers or dtypes without an equivalent.
    """
    obs = _instance(obs_or_partial)
    kind, options = _kind(obs)
    fields: dict[str, Any] = {
        "kind": kind,
        "dtype": _lookup(_DTYPES, obs.dtype, "dtype"),
        "is_dynamic": bool(getattr(obs, "is_dynamic", False)),
        "options": options,
    }
    qscheme = getattr(obs, "qscheme", None)
    if qscheme is not None:
        fields["qscheme"] = _lookup(_QSCHEMES, qscheme, "qscheme")
    if hasattr(obs, "ch_axis"):
        fields["ch_axis"] = obs.ch_axis
    if isinstance(getattr(obs, "eps", None), torch.Tensor):
        fields["eps"] = float(obs.eps.item())
    if kind in ("placeholder", "noop"):
        if getattr(obs, "quant_min", None) is not None and getattr(obs, "quant_max", None) is not None:
            fields["quant_min"], fields["quant_max"] = obs.quant_min, obs.quant_max
    elif kind == "fixed" or obs.has_customized_qrange:
        fields["quant_min"], fields["quant_max"] = obs.quant_min, obs.quant_max
    else:
        fields["reduce_range"] = bool(obs.reduce_range)
    return ObserverSpec(**fields)

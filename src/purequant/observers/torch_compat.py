"""Read a torch.ao observer (class, instance, `with_args` partial, FakeQuantize) into a spec.

torch.ao.quantization is imported lazily: it is deprecated upstream and only needed here.
Classes and partials are instantiated once (cheap: a few buffers) so that torch.ao itself
resolves defaults, nested `with_args` and callable args; the instance is then read.
"""

from __future__ import annotations

import warnings
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


def _instance(obs_or_partial: Any) -> tuple[Any, bool]:
    """The observer instance to read, and whether it sat inside a FakeQuantize."""
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    obj = obs_or_partial
    if not isinstance(obj, (ObserverBase, FakeQuantizeBase)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao's reduce_range deprecation chatter
                obj = obj()
        except Exception as e:
            raise ObserverConfigError(
                f"cannot instantiate {obs_or_partial!r} to read it ({e}); pass an instance or "
                "a .with_args(...) partial with all required arguments"
            ) from None
    fake_quant = isinstance(obj, FakeQuantizeBase)
    if fake_quant:
        obj = obj.activation_post_process
    if not isinstance(obj, ObserverBase):
        raise ObserverConfigError(f"{obs_or_partial!r} is not a torch.ao observer or FakeQuantize")
    return obj, fake_quant


def _kind(obs: Any) -> tuple[str, dict[str, Any]]:
    from torch.ao.quantization import observer as o

    # Most specific classes first: the moving averages subclass the plain min/max observers.
    if isinstance(obs, o.MovingAveragePerChannelMinMaxObserver):
        return "moving_average_per_channel_minmax", {"averaging_constant": float(obs.averaging_constant)}
    if isinstance(obs, o.PerChannelMinMaxObserver):
        return "per_channel_minmax", {}
    if isinstance(obs, o.MovingAverageMinMaxObserver):
        return "moving_average_minmax", {"averaging_constant": float(obs.averaging_constant)}
    if isinstance(obs, o.MinMaxObserver):
        return "minmax", {}
    if isinstance(obs, o.HistogramObserver):
        return "histogram", {"bins": int(obs.bins), "upsample_rate": int(obs.upsample_rate)}
    if isinstance(obs, o.FixedQParamsObserver):
        return "fixed", {"scale": float(obs.scale.item()), "zero_point": int(obs.zero_point.item())}
    if isinstance(obs, o.PlaceholderObserver):
        return "placeholder", {}
    if isinstance(obs, o.NoopObserver):
        return "noop", {}
    if isinstance(obs, o.ReuseInputObserver):
        return "noop", {"reuse_input": True}
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
    recorded as the instance's effective quant_min/quant_max (torch.ao has already halved it
    under reduce_range; spec ranges are effective), which gives the same qparams. The result
    matches the qconfig layer's reader field for field (FakeQuantize wrappers get option
    fake_quant=True, ReuseInputObserver is a noop with reuse_input=True). Returns a new spec.
    Raises ObserverConfigError for observers or dtypes without an equivalent.
    """
    obs, fake_quant = _instance(obs_or_partial)
    kind, options = _kind(obs)
    if fake_quant:
        options["fake_quant"] = True
    custom = getattr(obs, "has_customized_qrange", True)  # Placeholder/Fixed/Noop keep theirs
    eps = getattr(obs, "eps", None)
    qscheme = getattr(obs, "qscheme", None)
    return ObserverSpec(
        kind=kind,
        dtype=_lookup(_DTYPES, obs.dtype, "dtype"),
        qscheme="per_tensor_affine" if qscheme is None else _lookup(_QSCHEMES, qscheme, "qscheme"),
        quant_min=getattr(obs, "quant_min", None) if custom else None,
        quant_max=getattr(obs, "quant_max", None) if custom else None,
        reduce_range=bool(getattr(obs, "reduce_range", False)),
        ch_axis=int(getattr(obs, "ch_axis", 0)),
        is_dynamic=bool(getattr(obs, "is_dynamic", False)),
        eps=ObserverSpec("noop").eps if eps is None else float(eps.item() if hasattr(eps, "item") else eps),
        options=options,
    )

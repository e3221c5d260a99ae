"""Read torch.ao observer constructors and QConfigs into purequant specs.

Private to the qconfig layer until `purequant.observers.from_torch_observer` lands. torch.ao is
imported inside functions only: it is deprecated upstream and may disappear, and purequant must
import without it.

An observer constructor (a class or a `with_args` partial) is instantiated once and its
attributes are read, so every default torch fills in is captured. Ranges: `quant_min/quant_max`
are None unless the constructor was given a custom range; a custom range is recorded as the
*effective* range (torch halves a custom range under `reduce_range`, and we store the result).
"""

from __future__ import annotations

import warnings
from typing import Any

from purequant.observers.spec import ObserverSpec
from purequant.qconfig.errors import QConfigError
from purequant.qconfig.spec import QConfig

_OBS = "torch.ao.quantization.observer."
_KIND_BY_CLASS = {
    _OBS + "MinMaxObserver": "minmax",
    _OBS + "MovingAverageMinMaxObserver": "moving_average_minmax",
    _OBS + "PerChannelMinMaxObserver": "per_channel_minmax",
    _OBS + "MovingAveragePerChannelMinMaxObserver": "moving_average_per_channel_minmax",
    _OBS + "HistogramObserver": "histogram",
    _OBS + "PlaceholderObserver": "placeholder",
    _OBS + "NoopObserver": "noop",
    _OBS + "FixedQParamsObserver": "fixed",
    # No kind of its own yet: a noop that re-uses its input's observer (reshape, view...).
    _OBS + "ReuseInputObserver": "noop",
}

# torch's plain integer dtypes behave as their quantized counterparts inside observers.
_DTYPE_ALIASES = {"uint8": "quint8", "int8": "qint8", "int32": "qint32", "float": "float32"}


def is_torch_qconfig(obj: Any) -> bool:
    """True for torch.ao QConfig / QConfigDynamic (namedtuples of activation and weight)."""
    return isinstance(obj, tuple) and getattr(obj, "_fields", None) == ("activation", "weight")


def is_torch_qconfig_mapping(obj: Any) -> bool:
    """True for a torch.ao QConfigMapping (duck-typed, so torch.ao is not imported to check)."""
    return all(
        hasattr(obj, a)
        for a in ("global_qconfig", "object_type_qconfigs", "module_name_regex_qconfigs")
    )


def qconfig_from_torch(qconfig: Any, *, where: str) -> QConfig:
    """Convert a torch.ao QConfig/QConfigDynamic; `where` names the entry for error messages."""
    return QConfig(
        activation=observer_spec_from_torch(qconfig.activation, where=f"{where} activation"),
        weight=observer_spec_from_torch(qconfig.weight, where=f"{where} weight"),
        name=_torch_qconfig_name(qconfig),
    )


def observer_spec_from_torch(ctor: Any, *, where: str) -> ObserverSpec | None:
    """Read an observer / fake-quant constructor into an ObserverSpec (None: not quantized)."""
    import torch

    if (
        ctor is None or ctor is torch.nn.Identity
    ):  # QConfigDynamic's and weight-only's "no observer"
        return None
    if isinstance(ctor, torch.nn.Module):
        raise QConfigError(
            f"{where}: got an observer instance {type(ctor).__name__}; pass its class or .with_args(...)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reduce_range deprecation chatter
            obs = ctor()
    except Exception as e:
        raise QConfigError(f"{where}: constructing {ctor!r} failed: {e}") from e
    fake_quant = hasattr(obs, "activation_post_process") and hasattr(obs, "fake_quant_enabled")
    inner = obs.activation_post_process if fake_quant else obs
    return _read_observer(inner, fake_quant=fake_quant, where=where)


def _read_observer(obs: Any, *, fake_quant: bool, where: str) -> ObserverSpec:
    cls = type(obs)
    cls_name = f"{cls.__module__}.{cls.__qualname__}"
    kind = _KIND_BY_CLASS.get(cls_name)
    if kind is None:
        raise QConfigError(
            f"{where}: observer class {cls_name} has no purequant observer kind; use one of "
            f"{sorted(n.rsplit('.', 1)[1] for n in _KIND_BY_CLASS)} (or their FakeQuantize wrappers)"
        )
    custom = getattr(
        obs, "has_customized_qrange", True
    )  # observers without the flag keep what was given
    return ObserverSpec(
        kind=kind,
        dtype=_dtype_name(obs.dtype, where),
        qscheme=_qscheme_name(getattr(obs, "qscheme", None)),
        quant_min=getattr(obs, "quant_min", None) if custom else None,
        quant_max=getattr(obs, "quant_max", None) if custom else None,
        reduce_range=bool(getattr(obs, "reduce_range", False)),
        ch_axis=int(getattr(obs, "ch_axis", 0)),
        is_dynamic=bool(getattr(obs, "is_dynamic", False)),
        eps=_eps(obs),
        options=_options(obs, cls.__name__, fake_quant),
    )


def _options(obs: Any, cls_name: str, fake_quant: bool) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if hasattr(obs, "averaging_constant"):
        opts["averaging_constant"] = float(obs.averaging_constant)
    if cls_name == "HistogramObserver":
        opts["bins"] = int(obs.bins)
        opts["upsample_rate"] = int(obs.upsample_rate)
    if cls_name == "FixedQParamsObserver":
        opts["scale"] = float(obs.scale.item())
        opts["zero_point"] = int(obs.zero_point.item())
    if cls_name == "ReuseInputObserver":
        opts["reuse_input"] = True
    if fake_quant:
        opts["fake_quant"] = True
    return opts


def _dtype_name(dtype: Any, where: str) -> str:
    from purequant.observers.spec import DTYPES

    name = str(dtype).removeprefix("torch.")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise QConfigError(
            f"{where}: dtype {dtype} is not supported; expected one of {sorted(DTYPES)}"
        )
    return name


def _qscheme_name(qscheme: Any) -> str:
    return "per_tensor_affine" if qscheme is None else str(qscheme).removeprefix("torch.")


def _eps(obs: Any) -> float:
    eps = getattr(obs, "eps", None)
    if eps is None:  # FixedQParams/Noop observers have none: keep the spec's default
        return float(ObserverSpec("noop").eps)
    return float(eps.item()) if hasattr(eps, "item") else float(eps)


def _torch_qconfig_name(qconfig: Any) -> str | None:
    """The public torch.ao name of a predefined qconfig, e.g. "default_dynamic_qconfig"."""
    import torch.ao.quantization.qconfig as module

    for attr, value in vars(module).items():
        if value is qconfig and not attr.startswith("_"):
            return f"torch.ao.quantization.{attr}"
    return None

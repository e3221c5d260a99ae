"""A CPU-aware default: keep `reduce_range` only where the int8 kernels need it.

x86/fbgemm defaults quantize activations to 7 bits (`reduce_range=True`) because the AVX2 int8
dot product (`vpmaddubsw`) adds pairs of u8*s8 products into saturating 16-bit lanes. CPUs with
VNNI (AVX512-VNNI or AVX-VNNI) have `vpdpbusd`, which accumulates in 32 bits, so the full 8-bit
range is safe there and loses less precision.

One kernel accumulates in 16 bits even on VNNI CPUs: fbgemm's depthwise conv. The default keeps
reduce_range for the inputs of the convs the engine runs on it (`QConfig.narrow_16bit_inputs`,
applied by `find_quants` where `depthwise_16bit` says the kernel is that one).

Caveat: the choice is baked into the converted model. A model converted without reduce_range on
a VNNI machine may saturate when run on a CPU without VNNI.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import evolve, frozen

from purequant.ir import ModuleSpec
from purequant.observers.spec import ObserverSpec
from purequant.qconfig.defaults import default_dynamic_qconfig_spec, default_qconfig_spec
from purequant.qconfig.spec import QConfig, QConfigSpec

# Linux /proc/cpuinfo flag names, which torch.cpu.get_capabilities() also uses as keys. Only
# AVX512-VNNI: torch 2.13's x86 engine routes convs to onednn (32-bit accumulation) on that
# flag alone; on a CPU with AVX-VNNI but no AVX512-VNNI every conv goes to fbgemm, whose
# kernels can saturate with full 8-bit activations. Untested there, so we stay conservative.
VNNI_FLAGS = ("avx512_vnni",)


@frozen
class VnniDetection:
    """Whether the CPU has a 32-bit-accumulating int8 dot product, and how we know.

    Attributes:
        vnni: True/False, or None when no flag source could be read.
        reason: one line naming the flags found and their source.
    """

    vnni: bool | None
    reason: str


@frozen
class CpuAwareDefault:
    """A backend default spec adjusted to this CPU.

    Attributes:
        spec: the QConfigSpec to use.
        reduce_range: whether activations keep reduce_range.
        reason: what was detected and what was changed.
    """

    spec: QConfigSpec
    reduce_range: bool
    reason: str


def detect_vnni(
    flags: Iterable[str] | None = None, *, source: str = "given flags"
) -> VnniDetection:
    """Detect VNNI from a set of CPU flags.

    Args:
        flags: CPU flag names (as in /proc/cpuinfo). None reads them with `read_cpu_flags()`.
        source: where `flags` came from, for the reason.

    Returns:
        The detection; `vnni` is None when flags are None and none could be read.
    """
    if flags is None:
        flags, source = read_cpu_flags()
        if flags is None:
            return VnniDetection(None, f"could not read CPU flags ({source})")
    found = sorted(set(VNNI_FLAGS) & set(flags))
    if found:
        return VnniDetection(True, f"{', '.join(found)} found in {source}")
    return VnniDetection(False, f"no VNNI flag ({' or '.join(VNNI_FLAGS)}) in {source}")


def read_cpu_flags(path: str = "/proc/cpuinfo") -> tuple[frozenset[str] | None, str]:
    """Read CPU flags from /proc/cpuinfo, else from `torch.cpu.get_capabilities()`.

    Returns:
        (flags or None, a description of the source).
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":  # the x86 flags line; identical for every core
                    return frozenset(value.split()), f"{path} flags"
    except OSError:
        pass
    try:
        import torch

        caps = torch.cpu.get_capabilities()
        return frozenset(k for k, v in caps.items() if v is True), "torch.cpu.get_capabilities()"
    except Exception as e:  # an old torch or a platform cpuinfo does not know
        return None, f"no {path} and torch.cpu.get_capabilities() failed: {e}"


def cpu_aware_default(
    backend: str = "x86", *, flags: Iterable[str] | None = None
) -> CpuAwareDefault:
    """The default static spec of `backend`, without reduce_range on VNNI CPUs.

    Args:
        backend: "x86", "fbgemm", "qnnpack" or "onednn".
        flags: CPU flags to decide from (for tests and cross-targeting); None detects this CPU.

    Returns:
        The spec, whether activations keep reduce_range, and the reason.
    """
    base = default_qconfig_spec(backend)
    if backend not in ("x86", "fbgemm"):
        return CpuAwareDefault(
            base,
            False,
            f"backend {backend} does not reduce the activation range; nothing to adjust",
        )
    detection = detect_vnni(flags)
    if not detection.vnni:
        why = detection.reason + ("" if detection.vnni is False else "; keeping the safe default")
        return CpuAwareDefault(
            base, True, f"{why}: keeping reduce_range=True (16-bit accumulation)"
        )
    spec = base.map_qconfigs(_drop_reduce_range)
    why = f"{detection.reason}: int8 kernels accumulate in 32 bits, so reduce_range is dropped"
    return CpuAwareDefault(spec, False, why + " (the model may saturate on CPUs without VNNI)")


def cpu_aware_dynamic_default(*, flags: Iterable[str] | None = None) -> QConfigSpec:
    """The dynamic int8 default, keeping 7-bit activations (reduce_range) without VNNI.

    The default dynamic spec uses the full 8 bits, exact where int8 kernels accumulate in 32
    bits (AVX512-VNNI) and 3-6 dB closer to float than torch.ao there; elsewhere the 16-bit
    accumulation can saturate, so it falls back to torch.ao's 7 bits. `flags`: as for
    `cpu_aware_default` (None: this CPU).
    """
    spec = default_dynamic_qconfig_spec()
    if detect_vnni(flags).vnni:
        return spec
    return spec.map_qconfigs(_reduce_activation_range)


def _reduce_activation_range(qc: QConfig) -> QConfig:
    act = qc.activation
    return qc if act is None else evolve(qc, activation=evolve(act, reduce_range=True))


def _drop_reduce_range(qc: QConfig) -> QConfig:
    new = evolve(qc, activation=_full_range(qc.activation), weight=_full_range(qc.weight))
    if new == qc:
        return new
    # Only a dropped activation range can reach a 16-bit kernel's input.
    new = evolve(new, narrow_16bit_inputs=new.activation != qc.activation)
    if not qc.name:  # names are outside equality, so compare before renaming
        return new
    return evolve(new, name=f"{qc.name}, reduce_range dropped")


def _full_range(spec: ObserverSpec | None) -> ObserverSpec | None:
    # An explicit quant range is already the effective one (see _torch_reader); only the
    # dtype-derived range widens when reduce_range goes.
    if spec is None or not spec.reduce_range or spec.quant_min is not None:
        return spec
    return evolve(spec, reduce_range=False)


# fbgemm's depthwise fast path (fbgemm `takeDepthWiseFastPath`), as measured on torch 2.13: every
# case below saturates with 8-bit activations, and the cases just outside it do not.
_DW_KERNELS = (3, 5, 7)
_DW_STRIDES = (1, 2)
_ONEDNN_MAX_GROUPS = 100  # torch's x86 engine: onednn runs groups <= 100 on VNNI CPUs


def depthwise_16bit(backend: str, conv: ModuleSpec, weight: ObserverSpec | None) -> str | None:
    """Why `backend` runs this conv on fbgemm's depthwise kernel, or None if it does not.

    That kernel adds pairs of u8*s8 products in saturating 16-bit lanes (`vpmaddubsw`) even on
    VNNI CPUs: 8-bit activations overflow (2*255*128 > 2**15 - 1), 7-bit ones cannot. fbgemm
    takes depthwise 2d/3d convs (groups == in_channels, 1 or 2 outputs per group, groups a
    multiple of 8) with 3, 5 or 7 kernels (height == width), strides 1 or 2, no dilation and
    "same" zero padding. The x86 engine hands it those with more than 100 groups, or with
    asymmetric weights; onednn runs the others on VNNI CPUs (torch `should_use_onednn_quant`).

    Args:
        backend: the lowering backend ("x86", "fbgemm"; others never run fbgemm).
        conv: the conv's ModuleSpec (its attrs: channels, groups, kernel_size, stride...).
        weight: the conv's weight spec (its qscheme decides x86's routing).

    Returns:
        A one-line reason, or None.
    """
    if backend not in ("x86", "fbgemm") or not _fbgemm_depthwise(conv):
        return None
    groups = conv.attr("groups")
    symmetric = weight is not None and weight.symmetric
    if backend == "x86" and groups <= _ONEDNN_MAX_GROUPS and symmetric:
        return None
    kernel = "fbgemm's depthwise kernel accumulates in 16 bits and saturates with 8-bit activations"
    if backend == "fbgemm":
        return kernel
    why = f"{groups} > {_ONEDNN_MAX_GROUPS} groups" if groups > _ONEDNN_MAX_GROUPS else "asymmetric weights"
    return f"x86 hands depthwise convs with {why} to fbgemm, and {kernel}"


def _fbgemm_depthwise(conv: ModuleSpec) -> bool:
    a = conv.attr
    kernel, groups = tuple(a("kernel_size", ())), a("groups", 1)
    if a("transposed", False) or len(kernel) not in (2, 3) or a("padding_mode", "zeros") != "zeros":
        return False
    if groups != a("in_channels") or a("out_channels") not in (groups, 2 * groups) or groups % 8:
        return False
    return (
        kernel[-2] == kernel[-1] and all(k in _DW_KERNELS for k in kernel)
        and all(s in _DW_STRIDES for s in a("stride", ()))
        and all(d == 1 for d in a("dilation", ()))
        and _same_padding(a("padding"), kernel)
    )


def _same_padding(padding: object, kernel: tuple[int, ...]) -> bool:
    if padding == "same":  # odd kernels: the same pads as below
        return True
    return isinstance(padding, tuple) and padding == tuple((k - 1) // 2 for k in kernel)

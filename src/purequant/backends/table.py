"""What each native backend can run, as data (measured on torch 2.13's CPU kernels).

The quantized CPU kernels are the same `torch.ops.quantized.*` operators on every engine; the
engine (`torch.backends.quantized.engine`) decides which library runs them and how prepacked
weights are laid out. The differences that matter to lowering were probed op by op on each
engine (conv1d/2d/3d, transposed, linear, add/mul, cat, matmul, the norms, the activations,
embedding): every engine runs all of them with quint8 activations, none takes qint8
activations, and none prepacks a per-channel transposed conv. Those are the first facts below.

A third was measured on depthwise convs (groups == channels) with 8-bit activations: fbgemm's
depthwise kernel accumulates in 16 bits and saturates (outputs off by up to ~30 steps on
uniform inputs), which 7-bit `reduce_range` activations avoid; the x86 engine hands it every
depthwise conv with more than 100 groups (or asymmetric weights): see
`purequant.qconfig.cpu.depthwise_16bit`, which the CPU-aware default uses to keep exactly those
inputs at 7 bits. onednn and qnnpack are exact there.
"""

from __future__ import annotations

from attrs import field, frozen
from pyrsistent import PMap, pmap

from ..errors import ConfigError


@frozen
class Backend:
    """One lowering backend.

    Attributes:
        name: "x86", "fbgemm", "qnnpack", "onednn", or "reference".
        engine: the `torch.backends.quantized.engine` that runs its kernels and packs its
            weights; None for the reference backend (plain float ops, no engine).
        activation_dtypes: activation dtypes the native kernels accept.
        per_channel_transposed: whether transposed convs take per-channel weights.
        depthwise_saturates: its depthwise conv kernel may saturate with activations wider
            than 7 bits (use `reduce_range` activations).
        missing: handler -> why it has no native kernel on this backend.
    """

    name: str
    engine: str | None
    activation_dtypes: frozenset = field(default=frozenset({"quint8"}), converter=frozenset)
    per_channel_transposed: bool = False
    depthwise_saturates: bool = False
    missing: PMap = field(factory=pmap, converter=pmap)


BACKENDS: PMap = pmap({
    "x86": Backend("x86", "x86", depthwise_saturates=True),
    "fbgemm": Backend("fbgemm", "fbgemm", depthwise_saturates=True),
    "qnnpack": Backend("qnnpack", "qnnpack"),
    "onednn": Backend("onednn", "onednn"),
    "reference": Backend("reference", None, frozenset({"quint8", "qint8"}), True),
})


def backend(name: str) -> Backend:
    """The backend called `name`; ConfigError listing the known ones otherwise."""
    found = BACKENDS.get(name)
    if found is None:
        raise ConfigError(f"unknown backend {name!r}", hint=f"choose one of {', '.join(sorted(BACKENDS))}")
    return found

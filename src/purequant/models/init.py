"""Deterministic initialisation that leaves torch's global random state alone.

Building a zoo model is a pure function of its arguments: the same call gives bit-identical
parameters, and nothing else in the process can tell it happened. Two mechanisms make that so:

1. The module is constructed under `torch.random.fork_rng(devices=[])`. PyTorch layers draw
   their default init from the global CPU generator inside `__init__`; forking restores the
   global state afterwards, so those draws are invisible to the caller.
2. Every parameter (and every normalisation buffer) is then overwritten from a local
   `torch.Generator` seeded with `seed`, in `named_modules()` order. The default draws above
   are therefore irrelevant: values depend only on `seed` and the architecture.

A module type with parameters of its own and no rule here is an error, not a silent fallback
to the (global-RNG) default init: it would break determinism quietly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)

Rule = Callable[[nn.Module, torch.Generator], None]


def build_seeded(factory: Callable[[], M], seed: int) -> M:
    """Construct `factory()` deterministically, initialise it from `seed`, return it in eval mode.

    Args:
        factory: builds the module (its default init may use the global RNG; it is discarded).
        seed: seed of the local generator all parameters are drawn from.

    Returns:
        The module, in eval mode, with parameters that depend only on `seed` and the
        architecture. torch's global RNG state is the same after the call as before.
    """
    with torch.random.fork_rng(devices=[]):
        module = factory()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    init_parameters(module, generator)
    return module.eval()


def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Overwrite every parameter of `module` in place from `generator`.

    Args:
        module: the module tree to initialise.
        generator: the only source of randomness used.

    Raises:
        TypeError: a submodule owns parameters and no rule covers its type.
    """
    with torch.no_grad():
        for name, sub in module.named_modules():
            rule = _rule_for(sub)
            if rule is not None:
                rule(sub, generator)
            elif any(True for _ in sub.parameters(recurse=False)):
                raise TypeError(
                    f"no deterministic init rule for {type(sub).__name__} at {name!r}; "
                    "add one to purequant.models.init"
                )


def _fan_in_uniform(tensor: torch.Tensor, fan_in: int, g: torch.Generator) -> None:
    # PyTorch's own default for Linear/Conv weights and biases: U(-1/sqrt(fan_in), +).
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(tensor, -bound, bound, generator=g)


def _init_conv(m: nn.Module, g: torch.Generator) -> None:
    # He init with fan_out, as torchvision uses for ResNet and MobileNetV2 convs.
    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
    if m.bias is not None:
        # Non-zero biases on purpose: a zero bias hides bias-quantization bugs.
        _fan_in_uniform(m.bias, m.weight[0].numel(), g)


def _init_linear(m: nn.Module, g: torch.Generator) -> None:
    _fan_in_uniform(m.weight, m.in_features, g)
    if m.bias is not None:
        _fan_in_uniform(m.bias, m.in_features, g)


def _init_batchnorm(m: nn.Module, g: torch.Generator) -> None:
    # Deliberately not the identity (weight 1, bias 0, mean 0, var 1): with identity statistics,
    # a wrong conv-bn fold gives the right answer and tests cannot see it. The ranges keep the
    # per-channel scale near 1 so untrained deep nets stay numerically tame.
    nn.init.uniform_(m.weight, 0.5, 1.5, generator=g)
    nn.init.normal_(m.bias, 0.0, 0.1, generator=g)
    nn.init.normal_(m.running_mean, 0.0, 0.1, generator=g)
    nn.init.uniform_(m.running_var, 0.5, 1.5, generator=g)
    m.num_batches_tracked.zero_()


def _init_layernorm(m: nn.Module, g: torch.Generator) -> None:
    # Non-trivial affine for the same reason as batch norm.
    nn.init.uniform_(m.weight, 0.8, 1.2, generator=g)
    nn.init.normal_(m.bias, 0.0, 0.02, generator=g)


def _init_embedding(m: nn.Module, g: torch.Generator) -> None:
    nn.init.normal_(m.weight, 0.0, 1.0, generator=g)


def _init_lstm(m: nn.Module, g: torch.Generator) -> None:
    # PyTorch's default for recurrent layers: every weight and bias U(-1/sqrt(hidden), +).
    bound = 1.0 / math.sqrt(m.hidden_size)
    for param in m.parameters(recurse=False):
        nn.init.uniform_(param, -bound, bound, generator=g)


# Checked in order with isinstance, so subclasses (e.g. nn.LazyLinear) reuse their base's rule.
_RULES: tuple[tuple[type[nn.Module], Rule], ...] = (
    (nn.Conv2d, _init_conv),
    (nn.Linear, _init_linear),
    (nn.BatchNorm2d, _init_batchnorm),
    (nn.LayerNorm, _init_layernorm),
    (nn.Embedding, _init_embedding),
    (nn.LSTM, _init_lstm),
)


def _rule_for(module: nn.Module) -> Rule | None:
    for kind, rule in _RULES:
        if isinstance(module, kind):
            return rule
    return None

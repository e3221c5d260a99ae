"""A plain multilayer perceptron: Linear -> ReLU pairs, then a Linear output layer.

The file is not called mlp.py because the package re-exports the `mlp` function, which would
shadow a submodule of the same name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .init import build_seeded

IN_FEATURES = 64


def mlp(
    in_features: int = IN_FEATURES, hidden: Sequence[int] = (128, 128), num_classes: int = 10,
    *, seed: int = 0,
) -> nn.Sequential:
    """Build an MLP with deterministic weights, in eval mode.

    The default input width, 64, is a flattened 8x8 digit, so it can share the digits data.

    Args:
        in_features: input width.
        hidden: width of each hidden layer (each followed by its own ReLU module).
        num_classes: size of the output.
        seed: seed of the local generator the weights come from.

    Returns:
        An nn.Sequential; input (batch, in_features), output (batch, num_classes).
    """
    widths = (in_features, *hidden)

    def make() -> nn.Sequential:
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        return nn.Sequential(*layers)

    return build_seeded(make, seed)


def feature_batch(
    batch: int, generator: torch.Generator, in_features: int = IN_FEATURES,
) -> tuple:
    """Standard-normal feature vectors shaped (batch, in_features)."""
    return (torch.randn(batch, in_features, generator=generator),)

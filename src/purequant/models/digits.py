"""A small CNN for 1x8x8 digit images (scikit-learn's digits), 10 classes.

This is the model the demo trains, so it keeps the patterns a quantizer must handle on a real
network: conv-bn-relu blocks (fusion), max pooling, flatten, linear-relu, a final linear.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import build_seeded


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class DigitsCNN(nn.Module):
    """Three conv-bn-relu blocks with two 2x2 max pools (8x8 -> 2x2), then a two-layer head.

    Args:
        num_classes: size of the output.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(1, 16),
            _conv_bn_relu(16, 32),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            _conv_bn_relu(32, 64),
            nn.MaxPool2d(2),  # 4x4 -> 2x2
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 2 * 2, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def digits_cnn(num_classes: int = 10, *, seed: int = 0) -> DigitsCNN:
    """Build the digits CNN with deterministic weights, in eval mode.

    Call `.train()` on the result before training it (the demo does).

    Args:
        num_classes: size of the output.
        seed: seed of the local generator the weights come from.

    Returns:
        The model; input (batch, 1, 8, 8) pixel intensities scaled to [0, 1], output
        (batch, num_classes).
    """
    return build_seeded(lambda: DigitsCNN(num_classes), seed)


def digit_batch(batch: int, generator: torch.Generator) -> tuple:
    """Uniform [0, 1) images shaped (batch, 1, 8, 8): the range of digits scaled by 1/16."""
    return (torch.rand(batch, 1, 8, 8, generator=generator),)

"""MobileNetV2 (width 1.0), the torchvision architecture written out by hand.

Parameter names follow torchvision's (`features.0.0`, `features.1.conv.0.0`, `classifier.1`...),
so a torchvision state_dict loads unchanged. ReLU6 is not in-place, for the same reason as in
`resnet.py`: graph interpreters must not see a stored value change.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import build_seeded

# (expansion t, output channels c, repeats n, first stride s), from the MobileNetV2 paper.
_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias, "same" padding) -> BatchNorm -> ReLU6, indexed 0, 1, 2.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (odd).
        stride: conv stride.
        groups: conv groups (== channels for the depthwise conv).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
        groups: int = 1,
    ) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                      bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1, linear); residual when shapes allow.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the depthwise conv.
        expand_ratio: hidden channels = in_channels * expand_ratio; 1 skips the expansion.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # use_residual is fixed at construction, so this branch is not data-dependent:
        # torch.fx sees a plain Python bool and traces one path.
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2: stem conv, 17 inverted residual blocks, 1x1 conv to 1280, pool, classifier.

    Args:
        num_classes: size of the output.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        features: list[nn.Module] = [ConvBNReLU6(3, _STEM_CHANNELS, stride=2)]
        channels = _STEM_CHANNELS
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        features.append(ConvBNReLU6(channels, _LAST_CHANNELS, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(_LAST_CHANNELS, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 1000, *, seed: int = 0) -> MobileNetV2:
    """Build MobileNetV2 with deterministic weights, in eval mode.

    Args:
        num_classes: size of the output (1000 gives torchvision's 3,504,872 parameters).
        seed: seed of the local generator the weights come from.

    Returns:
        The model; input (batch, 3, H, W) (224 is standard), output (batch, num_classes).
    """
    return build_seeded(lambda: MobileNetV2(num_classes), seed)

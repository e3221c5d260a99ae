"""ResNet-18, the torchvision architecture written out by hand.

Parameter names follow torchvision's (`conv1`, `layer1.0.downsample.0`, `fc`...), so a
torchvision state_dict loads into it unchanged. Two deliberate differences in module
structure, neither visible in the state_dict:

- every ReLU call site is its own `nn.ReLU` module (torchvision reuses one per block), so a
  traced graph has one module per node and per-site qconfigs can differ;
- ReLUs are not in-place: graph interpreters that keep values in an environment must not see
  a value change under them.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import build_seeded

IMAGE_SIZE = 224


class BasicBlock(nn.Module):
    """Two 3x3 conv-bn layers with an identity (or 1x1 conv-bn) shortcut.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: stride of the first conv; the shortcut downsamples to match when != 1.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class ResNet18(nn.Module):
    """ResNet-18: a 7x7 stem, four stages of two BasicBlocks, global pooling, one Linear.

    Args:
        num_classes: size of the output.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.layer1 = _stage(64, 64, stride=1)
        self.layer2 = _stage(64, 128, stride=2)
        self.layer3 = _stage(128, 256, stride=2)
        self.layer4 = _stage(256, 512, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        BasicBlock(in_channels, out_channels, stride),
        BasicBlock(out_channels, out_channels, 1),
    )


def resnet18(num_classes: int = 1000, *, seed: int = 0) -> ResNet18:
    """Build ResNet-18 with deterministic weights, in eval mode.

    Args:
        num_classes: size of the output (1000 gives torchvision's 11,689,512 parameters).
        seed: seed of the local generator the weights come from.

    Returns:
        The model; input (batch, 3, H, W) with H, W >= 32 (224 is standard), output
        (batch, num_classes).
    """
    return build_seeded(lambda: ResNet18(num_classes), seed)


def image_batch(batch: int, generator: torch.Generator, size: int = IMAGE_SIZE) -> tuple:
    """Standard-normal images shaped (batch, 3, size, size), as after ImageNet normalisation."""
    return (torch.randn(batch, 3, size, size, generator=generator),)

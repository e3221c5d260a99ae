"""Fused float modules: what the `fuse` stage turns conv/linear (+bn) (+relu) chains into.

Each class *is* its conv or linear (a subclass), so a fused module's own attributes and tensors
are exactly those of the conv it came from, and a ModuleSpec for it reads like the conv's spec:
`type="purequant.nn.ConvReLU2d"`, the conv's attrs, `weight`/`bias` param paths. The training
(QAT) forms that keep batch norm unfolded hold it as a child `bn`, so its attrs and params appear
in the spec under a `bn.` prefix (`bn.eps`, `bn.running_mean`), like state_dict keys.

They are float modules: `forward` computes what the unfused chain computed. A later stage swaps
them for QAT or quantized modules; here they only mark "these ops run as one kernel".

Note: torch.fx traces *through* these classes (they are not in torch.nn), so materialise them
with `build_module` from a spec rather than re-tracing a model that contains them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FUSED_TYPES",
    "ConvBn1d",
    "ConvBn2d",
    "ConvBn3d",
    "ConvBnReLU1d",
    "ConvBnReLU2d",
    "ConvBnReLU3d",
    "ConvReLU1d",
    "ConvReLU2d",
    "ConvReLU3d",
    "LinearBn1d",
    "LinearReLU",
]


# ------------------------------------------------------------------ conv/linear + relu
class ConvReLU1d(nn.Conv1d):
    """relu(conv1d(x)); eval-mode result of conv1d (+ folded bn1d) + relu."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(input))


class ConvReLU2d(nn.Conv2d):
    """relu(conv2d(x)); eval-mode result of conv2d (+ folded bn2d) + relu."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(input))


class ConvReLU3d(nn.Conv3d):
    """relu(conv3d(x)); eval-mode result of conv3d (+ folded bn3d) + relu."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(input))


class LinearReLU(nn.Linear):
    """relu(linear(x)); result of linear (+ folded bn1d) + relu."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(input))


# ------------------------------------------------------- training forms: bn kept as a child
class ConvBn1d(nn.Conv1d):
    """bn(conv1d(x)) with the bn (`self.bn`, a BatchNorm1d) unfolded, for QAT."""

    bn: nn.BatchNorm1d

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _attach_bn(self, nn.BatchNorm1d, self.out_channels)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.bn(super().forward(input))


class ConvBn2d(nn.Conv2d):
    """bn(conv2d(x)) with the bn (`self.bn`, a BatchNorm2d) unfolded, for QAT."""

    bn: nn.BatchNorm2d

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _attach_bn(self, nn.BatchNorm2d, self.out_channels)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.bn(super().forward(input))


class ConvBn3d(nn.Conv3d):
    """bn(conv3d(x)) with the bn (`self.bn`, a BatchNorm3d) unfolded, for QAT."""

    bn: nn.BatchNorm3d

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _attach_bn(self, nn.BatchNorm3d, self.out_channels)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.bn(super().forward(input))


class ConvBnReLU1d(ConvBn1d):
    """relu(bn(conv1d(x))) with the bn unfolded, for QAT."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(input))


class ConvBnReLU2d(ConvBn2d):
    """relu(bn(conv2d(x))) with the bn unfolded, for QAT."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(input))


class ConvBnReLU3d(ConvBn3d):
    """relu(bn(conv3d(x))) with the bn unfolded, for QAT."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(input))


class LinearBn1d(nn.Linear):
    """bn(linear(x)) with the bn (`self.bn`, a BatchNorm1d) unfolded, for QAT."""

    bn: nn.BatchNorm1d

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _attach_bn(self, nn.BatchNorm1d, self.out_features)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.bn(super().forward(input))


def _attach_bn(module: nn.Module, bn_cls: type[nn.Module], features: int) -> None:
    # Only for direct construction (ConvBn2d(3, 8, 3)); build_module bypasses __init__ and
    # attaches the spec's own bn.
    module.bn = bn_cls(features, device=module.weight.device, dtype=module.weight.dtype)


# Spec type name -> (class, {child name: child class}). The names are the public ones
# (`purequant.nn.X`), which is what qualified_name() gives for these classes.
FUSED_TYPES: dict[str, tuple[type[nn.Module], dict[str, type[nn.Module]]]] = {
    "purequant.nn.ConvReLU1d": (ConvReLU1d, {}),
    "purequant.nn.ConvReLU2d": (ConvReLU2d, {}),
    "purequant.nn.ConvReLU3d": (ConvReLU3d, {}),
    "purequant.nn.LinearReLU": (LinearReLU, {}),
    "purequant.nn.ConvBn1d": (ConvBn1d, {"bn": nn.BatchNorm1d}),
    "purequant.nn.ConvBn2d": (ConvBn2d, {"bn": nn.BatchNorm2d}),
    "purequant.nn.ConvBn3d": (ConvBn3d, {"bn": nn.BatchNorm3d}),
    "purequant.nn.ConvBnReLU1d": (ConvBnReLU1d, {"bn": nn.BatchNorm1d}),
    "purequant.nn.ConvBnReLU2d": (ConvBnReLU2d, {"bn": nn.BatchNorm2d}),
    "purequant.nn.ConvBnReLU3d": (ConvBnReLU3d, {"bn": nn.BatchNorm3d}),
    "purequant.nn.LinearBn1d": (LinearBn1d, {"bn": nn.BatchNorm1d}),
}

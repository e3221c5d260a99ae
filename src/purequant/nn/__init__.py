"""Float modules purequant stages produce, and `build_module` to materialise them from specs."""

from .build import BUFFER_NAMES, build_module, module_class
from .fused import (
    FUSED_TYPES,
    ConvBn1d,
    ConvBn2d,
    ConvBn3d,
    ConvBnReLU1d,
    ConvBnReLU2d,
    ConvBnReLU3d,
    ConvReLU1d,
    ConvReLU2d,
    ConvReLU3d,
    LinearBn1d,
    LinearReLU,
)

__all__ = [
    "BUFFER_NAMES", "FUSED_TYPES", "ConvBn1d", "ConvBn2d", "ConvBn3d", "ConvBnReLU1d",
    "ConvBnReLU2d", "ConvBnReLU3d", "ConvReLU1d", "ConvReLU2d", "ConvReLU3d", "LinearBn1d",
    "LinearReLU", "build_module", "module_class",
]

"""Lowering: rules per handler that turn observed matches into quantized ops, the sweep that
applies them, and materialisation of the result to torch.fx.

The stages are `purequant.stages.lower.lower` and `purequant.stages.fold_weights.fold_weights`;
see docs/lowering.md.
"""

from .dialect import DIALECTS, NATIVE, REFERENCE
from .materialise import lowered_module, resolve_op
from .record import LoweredMatch, LoweringRecord, LoweringSkip
from .sweep import CannotLower, QVal, Sweep
from .table import NATIVE_RULES, REFERENCE_RULES, RULES

__all__ = [
    "DIALECTS", "NATIVE", "NATIVE_RULES", "REFERENCE", "REFERENCE_RULES", "RULES", "CannotLower",
    "LoweredMatch", "LoweringRecord", "LoweringSkip", "QVal", "Sweep", "lowered_module", "resolve_op",
]

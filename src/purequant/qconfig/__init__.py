"""Qconfig specs, the forms users bring (1.7 dicts, torch.ao QConfig/QConfigMapping), resolution.

Pure: nothing here holds a module or a callable. torch.ao is imported lazily, only to read a
torch.ao object handed to `to_qconfig_spec`.
"""

from purequant.qconfig.convert import layer, to_qconfig_spec
from purequant.qconfig.cpu import (
    CpuAwareDefault,
    VnniDetection,
    cpu_aware_default,
    cpu_aware_dynamic_default,
    detect_vnni,
)
from purequant.qconfig.defaults import (
    BACKENDS,
    backend_default_qconfig,
    default_dynamic_qconfig_spec,
    default_qconfig_spec,
    embedding_qconfig_spec,
    float16_qconfig_spec,
)
from purequant.qconfig.errors import QConfigError, QualifiedNameError
from purequant.qconfig.names import object_type_key, qualified_name, resolve_qualified_name
from purequant.qconfig.resolve import (
    Decision,
    resolve,
    resolve_function,
    resolve_method,
    resolve_module,
)
from purequant.qconfig.spec import LEVELS, QConfig, QConfigSpec

__all__ = [
    "BACKENDS",
    "LEVELS",
    "CpuAwareDefault",
    "Decision",
    "QConfig",
    "QConfigError",
    "QConfigSpec",
    "QualifiedNameError",
    "VnniDetection",
    "cpu_aware_default",
    "cpu_aware_dynamic_default",
    "default_dynamic_qconfig_spec",
    "backend_default_qconfig",
    "default_qconfig_spec",
    "detect_vnni",
    "embedding_qconfig_spec",
    "float16_qconfig_spec",
    "layer",
    "object_type_key",
    "qualified_name",
    "resolve",
    "resolve_function",
    "resolve_method",
    "resolve_module",
    "resolve_qualified_name",
    "to_qconfig_spec",
]

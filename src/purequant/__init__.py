"""purequant: quantize PyTorch models through pure functions over immutable graphs."""

__version__ = "0.1.0"

from .api import Prepared, calibrate, observe_batch, prepare  # noqa: E402
from .calibration import CalibrationStats, merge_stats  # noqa: E402
from .check_config import ConfigReport, check_config  # noqa: E402
from .convert_api import Quantized, convert, quantize, quantize_dynamic, quantized_record  # noqa: E402
from .pipeline.replay import replay  # noqa: E402
from .saving import load, save  # noqa: E402
from .trace import Traced, to_graph_module, trace  # noqa: E402

__all__ = [
    "CalibrationStats", "ConfigReport", "Prepared", "Quantized", "Traced", "calibrate", "check_config", "convert", "merge_stats",
    "load", "observe_batch", "prepare", "quantize", "quantize_dynamic", "quantized_record", "replay",
    "save", "to_graph_module", "trace",
]

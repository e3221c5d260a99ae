"""purequant: quantize PyTorch models through pure functions over immutable graphs."""

__version__ = "0.1.0"

from .pipeline.replay import replay  # noqa: E402
from .trace import Traced, to_graph_module, trace  # noqa: E402

__all__ = ["Traced", "replay", "to_graph_module", "trace"]

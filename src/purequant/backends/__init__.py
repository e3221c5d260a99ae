"""Per-backend facts the lowering reads, as immutable data, and the engine switch for the shell.

    from purequant.backends import backend, quantized_engine
    backend("qnnpack").engine                  # "qnnpack"
    with quantized_engine("qnnpack"):          # run (and fold) a native lowering on qnnpack
        out = gm(x)
"""

from .engine import quantized_engine
from .table import BACKENDS, Backend, backend

__all__ = ["BACKENDS", "Backend", "backend", "quantized_engine"]

"""Stage specs, the runner, instruments (check, phase, time, dump), records and replay.

See docs/pipeline.md for a walk-through, and `stage.py` for the calling convention.
"""

from .codec import CodecError, from_plain, to_plain
from .dump import Dump, DumpError, load_stage
from .instruments import (
    DEFAULT_INSTRUMENTS,
    CheckWellFormed,
    Instrument,
    PhaseCheck,
    PhaseRule,
    StageContext,
    Timing,
)
from .replay import ReplayResult, replay
from .runner import StageRecord, run, run_stage
from .stage import PipelineState, StageSpec, call_stage, stage

__all__ = [
    "DEFAULT_INSTRUMENTS", "CheckWellFormed", "CodecError", "Dump", "DumpError", "Instrument",
    "PhaseCheck", "PhaseRule", "PipelineState", "ReplayResult", "StageContext", "StageRecord",
    "StageSpec", "Timing", "call_stage", "from_plain", "load_stage", "replay", "run", "run_stage",
    "stage", "to_plain",
]

"""Switching torch's quantized engine for one block of shell code, and only there.

The engine is process-global state in torch. Lowering never touches it (graphs are plain
data); the shell sets it around the code that packs weights (`fold_weights`) and runs the
kernels, and restores it afterwards, so importing purequant changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import ConfigError


@contextmanager
def quantized_engine(engine: str | None) -> Iterator[str]:
    """Run the block with `torch.backends.quantized.engine = engine`, then restore it.

    `None` leaves the engine as it is (the reference backend needs none). Yields the engine in
    effect. Raises ConfigError when this torch build lacks the engine.
    """
    before = torch.backends.quantized.engine
    if engine is None:
        yield before
        return
    if engine not in torch.backends.quantized.supported_engines:
        have = ", ".join(torch.backends.quantized.supported_engines)
        raise ConfigError(f"this torch build has no quantized engine {engine!r} (it has: {have})")
    torch.backends.quantized.engine = engine
    try:
        yield engine
    finally:
        torch.backends.quantized.engine = before

"""Pause Python's cyclic garbage collector around allocation-heavy sweeps.

A whole-graph sweep allocates several small objects per node; the cyclic collector then walks
the whole live heap again and again (measured: 3x slower builds at 10k nodes). Our values form
no reference cycles while a graph is built, so pausing collection loses nothing; the previous
state is restored on exit, so a caller that disabled GC keeps it disabled.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

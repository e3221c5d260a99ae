"""`default_table(backend)`: the pattern table of one of torch.ao's native backends."""

from __future__ import annotations

import functools

from .defaults import (
    BACKENDS,
    DEFAULT_QUINT8,
    batch_norm_entries,
    binary_entries,
    conv_entries,
    default_op_entries,
    embedding_entries,
    fixed_entries,
    linear_entries,
    rnn_entries,
    shared_entries,
    tensor_info_entries,
)
from .onednn import conv_add_entries, linear_eltwise_entries
from .table import PatternTable


@functools.cache
def default_table(backend: str = "x86") -> PatternTable:
    """The table for `backend`: "x86" (default), "fbgemm", "qnnpack" or "onednn".

    Built once per backend and cached; tables are immutable, so sharing them is safe.
    """
    dt = BACKENDS.get(backend)
    if dt is None:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    entries = [e for d in (1, 2, 3) for e in conv_entries(d, dt.conv)]
    entries += linear_entries(dt.linear)
    entries += binary_entries(dt.binary)
    entries += shared_entries(dt.default)
    entries += fixed_entries(dt.fixed)
    entries += default_op_entries(dt.default, dt.layer_norm)
    entries += batch_norm_entries(dt.default)
    entries += rnn_entries(dt.rnn)
    entries += embedding_entries(dt.embedding)
    if dt.tensor_info:
        entries += tensor_info_entries((DEFAULT_QUINT8,))
    if backend == "onednn":
        entries += conv_add_entries(dt.conv)
        entries += linear_eltwise_entries(dt.linear)
    return PatternTable.of(entries, name=backend)

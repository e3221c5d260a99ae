"""Quantization patterns as immutable data: ops, reverse-nested patterns, entries, tables."""

from .backends import default_table
from .entry import Constraint, DTypeConfig, Observation, PatternEntry, entry, quant_range
from .op import Op, OpKey, function, method, module, node_key
from .pattern import ANY, Pat, match_at, seq
from .table import PatternTable

__all__ = [
    "ANY", "Constraint", "DTypeConfig", "Observation", "Op", "OpKey", "Pat", "PatternEntry",
    "PatternTable", "default_table", "entry", "function", "match_at", "method", "module",
    "node_key", "quant_range", "seq",
]

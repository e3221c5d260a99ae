"""Deterministic unique ids, fx-style (`add`, `add_1`, `add_2`).

A graph carries, per base name, the highest suffix it has ever used (`counters`). Fresh ids are
`base_{counter+1}`, so an id is never handed out twice in one graph's history, even after its
node was erased. Counters are derived from the node set when a graph is built from scratch, and
printed by the text format only where history made them differ, so a printed-then-parsed graph
hands out exactly the same fresh ids (replay depends on that).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

_SUFFIX = re.compile(r"(.*)_(\d+)\Z")
_BAD = re.compile(r"[^A-Za-z0-9_]")


@functools.lru_cache(maxsize=1 << 16)
def split_id(nid: str) -> tuple[str, int]:
    """`add_3` -> ("add", 3); `add` -> ("add", 0).

    Memoised: every builder splits every id it is given (to keep its counters), and the same
    ids pass through every stage's builder; a cache hit is ~10x cheaper than the regex.
    """
    m = _SUFFIX.match(nid)
    if m and m.group(1):
        return m.group(1), int(m.group(2))
    return nid, 0


def sanitize(prefix: str) -> str:
    """Turn any string (a module path, a function name) into an identifier-like base."""
    base = _BAD.sub("_", prefix).strip("_") or "v"
    if base[0].isdigit():
        base = "_" + base
    # Strip every numeric suffix, not just one: a base that still looked numbered (`a_1`, from
    # `a_1_5`) would be handed out bare as the id `a_1`, which split_id files under base `a`;
    # the counter of base `a_1` would never learn it was used and would hand it out again
    # after that node was erased.
    while True:
        stem = split_id(base)[0]
        if stem == base:
            return base
        base = stem


def derive_counters(ids: Iterable[str]) -> dict[str, int]:
    """The highest suffix per base among `ids` (O(n))."""
    out: dict[str, int] = {}
    for nid in ids:
        base, n = split_id(nid)
        if out.get(base, -1) < n:
            out[base] = n
    return out


def next_free(base: str, counter: int | None, taken) -> str:
    """The first unused id for `base` given its counter (None: base never used)."""
    if counter is None and base not in taken:
        return base
    i = (counter or 0) + 1
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"

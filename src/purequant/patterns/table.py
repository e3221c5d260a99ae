"""PatternTable: an immutable, priority-sorted tuple of entries indexed by root op.

Candidates for a node are found with one dict lookup on the node's (kind, name) key, already in
priority order, so matching a graph costs O(n * candidates per op). Tables are values: adding,
removing or replacing entries returns a new table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from attrs import field, frozen
from pyrsistent import PMap, pmap

from ..ir import ModuleSpec, Node
from .entry import PatternEntry
from .op import OpKey, node_key


def _order(entry: PatternEntry) -> tuple[int, str]:
    # Highest priority first; equal priorities fall back to the name so order never depends
    # on how the table was assembled.
    return -entry.priority, entry.name


@frozen(eq=False)
class PatternTable:
    """Entries sorted by descending priority (then name), with an index by root op key.

    Build with `PatternTable.of(entries, name=...)`; the constructor expects the sorted
    tuple and the index it implies.
    """

    name: str
    entries: tuple[PatternEntry, ...]
    index: PMap = field(repr=False)  # OpKey -> tuple of entries, priority order

    @staticmethod
    def of(entries: Iterable[PatternEntry], *, name: str = "custom") -> PatternTable:
        """Sort `entries`, check names are unique, and index them. O(e log e)."""
        ordered = tuple(sorted(entries, key=_order))
        seen: set[str] = set()
        index: dict[OpKey, list[PatternEntry]] = {}
        for e in ordered:
            if e.name in seen:
                raise ValueError(f"pattern table {name!r}: two entries are named {e.name!r}")
            seen.add(e.name)
            assert e.pattern.op is not None
            for key in e.pattern.op.keys():
                index.setdefault(key, []).append(e)
        return PatternTable(name, ordered, pmap({k: tuple(v) for k, v in index.items()}))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PatternTable):
            return NotImplemented
        return self.name == other.name and self.entries == other.entries

    def __hash__(self) -> int:
        return hash((self.name, self.entries))

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def __contains__(self, name: object) -> bool:
        return any(e.name == name for e in self.entries)

    def get(self, name: str) -> PatternEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"pattern table {self.name!r} has no entry {name!r}")

    def candidates(self, node: Node, modules: Mapping[str, ModuleSpec]) -> tuple[PatternEntry, ...]:
        """Entries whose root op accepts `node`, highest priority first. O(1)."""
        key = node_key(node, modules)
        return self.index.get(key, ()) if key is not None else ()

    def keys(self) -> frozenset[OpKey]:
        """Every (kind, name) some entry is rooted at."""
        return frozenset(self.index)

    def covered(self) -> frozenset[OpKey]:
        """Every (kind, name) that appears anywhere in some pattern."""
        out: set[OpKey] = set()
        for e in self.entries:
            stack = [e.pattern]
            while stack:
                p = stack.pop()
                if p.op is not None:
                    out.update(p.op.keys())
                    stack.extend(p.args)
        return frozenset(out)

    # ------------------------------------------------------------------ new tables
    def with_entries(self, *entries: PatternEntry, name: str | None = None) -> PatternTable:
        """A table with `entries` added; an entry whose name exists replaces the old one."""
        new = {e.name for e in entries}
        kept = [e for e in self.entries if e.name not in new]
        return PatternTable.of([*kept, *entries], name=name or self.name)

    def without(self, *names: str, name: str | None = None) -> PatternTable:
        """A table without the named entries (KeyError naming any that is absent)."""
        missing = set(names) - {e.name for e in self.entries}
        if missing:
            raise KeyError(f"pattern table {self.name!r} has no entries {sorted(missing)}")
        gone = set(names)
        return PatternTable.of([e for e in self.entries if e.name not in gone], name=name or self.name)

    def explain(self, name: str) -> str:
        """A few lines on one entry: its pattern, priority, kinds and where it was defined."""
        e = self.get(name)
        lines = [
            f"{e.name}: {e.pattern}",
            f"  priority {e.priority}, output {e.observation.value}, handler {e.handler!r}",
            "  accepts " + ", ".join(str(dc) for dc in e.dtype_configs),
        ]
        if e.fused_module or e.qat_module:
            lines.append(f"  fused {e.fused_module}, qat {e.qat_module}")
        if e.note:
            lines.append(f"  note: {e.note}")
        if e.source:
            lines.append(f"  defined at {e.source}")
        return "\n".join(lines)

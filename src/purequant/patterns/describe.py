"""A pattern table as a markdown list (docs/patterns.md embeds the default one)."""

from __future__ import annotations

from .entry import PatternEntry
from .table import PatternTable

BEGIN = "<!-- BEGIN GENERATED TABLE -->"
END = "<!-- END GENERATED TABLE -->"


def table_markdown(table: PatternTable) -> str:
    """One row per entry, in priority order: name, pattern, priority, output, dtypes, handler."""
    rows = [
        f"Table `{table.name}`: {len(table)} entries, highest priority first.",
        "",
        "| entry | pattern | priority | output | accepts | handler | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    rows += [_row(e) for e in table.entries]
    return "\n".join(rows) + "\n"


def _row(e: PatternEntry) -> str:
    accepts = "; ".join(str(dc) for dc in e.dtype_configs)
    notes = []
    if e.weight_arg is not None:
        notes.append(f"weight arg {e.weight_arg[0]}" + ("" if e.quantize_weight else " (float)"))
    if e.module_weight:
        notes.append("module weight")
    if e.by_tensor_args:
        notes.append("by tensor args: " + ", ".join(f"{k}: {v.value}" for k, v in sorted(e.by_tensor_args.items())))
    if e.fixed_qparams:
        notes.append("fixed " + ", ".join(f"{d} {s:g}/{z}" for d, (s, z) in sorted(e.fixed_qparams.items())))
    if e.shares_all_inputs:
        notes.append("all inputs share")
    if not e.observe_inputs:
        notes.append("inputs not observed")
    if e.fused_module:
        notes.append(f"fuses to `{e.fused_module}`")
    if e.note:
        notes.append(e.note)
    pattern = str(e.pattern).replace("|", "\\|")
    return f"| `{e.name}` | `{pattern}` | {e.priority} | {e.observation.value} | {accepts} | {e.handler} | {'; '.join(notes)} |"

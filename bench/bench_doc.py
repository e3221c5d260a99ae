"""docs/benchmarks.md as named blocks between markers, so a run rewrites only what it measured.

    <!-- run_all:transform -->
    ...generated markdown...
    <!-- /run_all:transform -->

Blocks named `keep-*` are hand-written and never regenerated: they are carried over from the
existing page. A page written before the markers existed is read once by `legacy_blocks`, which
lifts its hand-written parts (the IR cost-model section with its design note, and the notes of
the trace and emit section) into keep blocks; everything else on it is regenerated.
"""

from __future__ import annotations

import re

BLOCK = re.compile(r"<!-- run_all:([\w-]+) -->\n(.*?)\n<!-- /run_all:\1 -->", re.S)
HEADLINE = re.compile(r"^\*\*Headline[^*]*\*\*.*$", re.M)


def parse(text: str) -> dict[str, str]:
    """name -> content of every marked block (legacy keep blocks if the page has no markers)."""
    found = {m.group(1): m.group(2) for m in BLOCK.finditer(text)}
    return found or legacy_blocks(text)


def legacy_blocks(text: str) -> dict[str, str]:
    out = {}
    ir = _section(text, "## IR cost model")
    if ir:
        out["keep-ir"] = ir
    trace = _section(text, "## Trace and emit scaling")
    start = trace.find("**Where the time goes**")
    if start >= 0:
        out["keep-trace-notes"] = trace[start:].strip()
    return out


def _section(text: str, heading: str) -> str:
    """From `heading` up to the next level-2 heading (or the end), stripped."""
    i = text.find(heading)
    if i < 0:
        return ""
    j = text.find("\n## ", i + len(heading))
    return text[i: j if j >= 0 else len(text)].strip()


def assemble(order: list[str], fresh: dict[str, str], old: dict[str, str]) -> str:
    """The page: `# Benchmarks`, then every block in `order`, fresh content over old."""
    parts = ["# Benchmarks", ""]
    for name in order:
        body = fresh.get(name, old.get(name))
        if body is None and name.startswith("keep-"):
            continue  # a hand-written block nobody has written yet
        if body is None:
            body = f"_Section `{name}` has not been measured yet: run `bench/run_all.py --only {name}`._"
        parts += [f"<!-- run_all:{name} -->", body.strip(), f"<!-- /run_all:{name} -->", ""]
    return "\n".join(parts)


def headlines(blocks: dict[str, str]) -> list[str]:
    """The `**Headline ...**` lines of the given blocks, in order."""
    return [line for body in blocks.values() for line in HEADLINE.findall(body)]

"""Generate docs/api.md from the code: every name in `purequant.__all__` and the stage functions.

    .venv/bin/python docs/gen_api.py          # rewrite docs/api.md
    .venv/bin/python docs/gen_api.py --check  # exit 1 if docs/api.md is out of date

Signatures and docstrings come from the objects themselves; Google-style sections (Args,
Returns, Raises, Attributes) become lists. Where a docstring does not say what an entry point
raises, `NOTES` adds it, written from reading the code (keep it short and true).
tests/test_docs.py checks that the page equals `render()`.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import attrs

PAGE = Path(__file__).resolve().parent / "api.md"

SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Quantizing", "The entry points, in the order a run uses them.", (
        "purequant.prepare", "purequant.calibrate", "purequant.observe_batch",
        "purequant.merge_stats", "purequant.convert", "purequant.quantize",
        "purequant.quantize_dynamic", "purequant.quantized_record",
    )),
    ("Checking a configuration", "Before calibrating: what the backend will do with each qconfig entry.", (
        "purequant.check_config", "purequant.ConfigReport", "purequant.check_config.EntryReport",
    )),
    ("Values", "Frozen values the entry points return. None of them changes after it is made.", (
        "purequant.Prepared", "purequant.CalibrationStats", "purequant.Quantized",
        "purequant.Traced",
    )),
    ("Tracing", "The torch.fx boundary (see [trace.md](trace.md)).", (
        "purequant.trace", "purequant.to_graph_module",
    )),
    ("Replay", "Re-run one dumped stage (see [pipeline.md](pipeline.md)).", (
        "purequant.replay",
    )),
    ("Saving", "One file per quantized model, no pickled code (see [saving.md](saving.md)).", (
        "purequant.save", "purequant.load",
    )),
    ("Stage functions", (
        "The pure stages `prepare` and `convert` run, in that order. Each reads a graph, the "
        "tables it names and earlier records, and returns `(graph, [tables...], record)` or a "
        "record (see [concepts.md](concepts.md#stages-and-their-records)). None of them touches "
        "an `nn.Module`."
    ), (
        "purequant.stages.fuse.fuse",
        "purequant.stages.generate_qconfig_map.generate_qconfig_map",
        "purequant.stages.find_matches.find_matches",
        "purequant.prepare_stages.match_patterns",
        "purequant.stages.find_quants.find_quants",
        "purequant.prepare_stages.plan_quants",
        "purequant.stages.insert_observers.insert_observers",
        "purequant.stages.lower.lower",
        "purequant.stages.fold_weights.fold_weights",
        "purequant.stages.eliminate_dead_code.eliminate_dead_code",
    )),
    ("Stage records", "What each stage returns besides the graph: frozen plain data.", (
        "purequant.stages.fuse.FuseRecord",
        "purequant.stages.generate_qconfig_map.QConfigMap",
        "purequant.stages.find_matches.MatchResult",
        "purequant.stages.find_matches.Match",
        "purequant.stages.find_quants.QuantPlan",
        "purequant.stages.insert_observers.ObserverInsertion",
        "purequant.lowering.record.LoweringRecord",
        "purequant.stages.fold_weights.FoldRecord",
        "purequant.stages.eliminate_dead_code.DeadCodeRecord",
    )),
)

# Written from the code, for entry points whose docstrings do not list what they raise.
NOTES: dict[str, str] = {
    "purequant.prepare": (
        "**Raises**\n\n"
        "- `ConfigError`: unknown `backend`; unknown `custom_config` key; the model's tensors "
        "live on several devices; a stage option that is not plain data (e.g. a class instead "
        "of a qualified-name string in `custom_module_types`).\n"
        "- `QConfigError` (a `ConfigError` and a `ValueError`): a qconfig form or entry it "
        "cannot read.\n"
        "- `TraceError`: torch.fx cannot trace the model (the message names the submodule and "
        "suggests `leaf_modules`), or `example_inputs` does not fit `forward`'s signature.\n"
        "- `StageError`, `GraphError`: a stage failed; the error carries notes naming the stage "
        "and the node."
    ),
    "purequant.calibrate": (
        "**Raises**\n\n"
        "- `ObserverError` subclasses from `purequant.observers`, e.g. `NonFiniteError` when a "
        "batch produces NaN or infinity at an observed value (the message names the observer "
        "and the node it observes, with its source line)."
    ),
    "purequant.observe_batch": (
        "Equivalent to `calibrate` on an empty copy of `prepared.stats` with one batch: the "
        "result has `batches == 1`. Combine results with `merge_stats` and install them with "
        "`Prepared.with_stats`.\n\n"
        "**Raises**: as `calibrate`."
    ),
    "purequant.check_config": (
        "Prints with `str(report)`; `report.ignored()` keeps the entries with a reason. A node "
        "no pattern covers at all counts in `decided` but not in `quantized`, without a reason "
        "line of its own (use `Prepared.explain`).\n\n"
        "**Raises**: whatever `prepare` raises."
    ),
    "purequant.quantize": (
        "**Raises**: whatever `prepare`, `calibrate` and `convert` raise."
    ),
    "purequant.quantize_dynamic": (
        "Traces the model like `prepare` (so it must be torch.fx-traceable; for `leaf_modules` "
        "call `prepare(model, default_dynamic_qconfig_spec(), example_inputs, "
        "custom_config=...)` and `convert` yourself: dynamic quantization needs no "
        "calibration).\n\n"
        "**Raises**\n\n"
        "- `ConfigError`: no `qconfig` is given and `dtype` is neither `torch.qint8` nor "
        "`torch.float16` (with a `qconfig`, `dtype` is not read); and everything `prepare` and "
        "`convert` raise."
    ),
    "purequant.quantized_record": (
        "**Raises**\n\n- `ConfigError`: the module has no `meta[\"purequant\"]` record."
    ),
    "purequant.replay": (
        "**Raises**\n\n"
        "- `DumpError`: the folder is not a stage dump, or a file is missing.\n"
        "- `CodecError`: the stage function or a record class lives outside purequant and "
        "`trust`."
    ),
    "purequant.Prepared": (
        "`Prepared.with_stats` raises `ConfigError` when the statistics belong to another "
        "observed graph. `Prepared.explain` raises `ConfigError` for an id that is in neither "
        "the traced nor the observed graph."
    ),
}

# Members without a docstring, described from their one-line bodies.
MEMBER_NOTES: dict[str, str] = {
    "Prepared.records": "`state.records`: stage name -> the record that stage returned.",
    "Prepared.observer_specs": "`stats.specs`: observer id -> ObserverSpec.",
    "Quantized.records": "stage name -> record, prepare's stages then convert's, as a dict.",
    "EntryReport.fully_ignored": "True when none of the nodes the entry decided was quantized.",
}

_SECTION = re.compile(r"(Args|Arguments|Attributes|Returns|Raises|Yields|Example|Examples):\Z")
_ITEM = re.compile(r"(\*{0,2}[\w.]+(?: \([^)]*\))?):\s*(.*)\Z")


def resolve(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _annotation(ann: Any) -> str:
    if ann is inspect.Parameter.empty:
        return ""
    return ann if isinstance(ann, str) else inspect.formatannotation(ann)


def signature(name: str, obj: Any) -> str:
    """`name(a: T = d, *, k: U = e) -> R`, one parameter per line when long."""
    sig = inspect.signature(obj)
    parts, star = [], False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.kind is p.VAR_POSITIONAL:
            star = True
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        text = prefix + p.name
        ann = _annotation(p.annotation)
        if ann:
            text += f": {ann}"
        if p.default is not inspect.Parameter.empty:
            text += (" = " if ann else "=") + repr(p.default)
        parts.append(text)
    ret = _annotation(sig.return_annotation)
    tail = f" -> {ret}" if ret and not inspect.isclass(obj) else ""
    one = f"{name}({', '.join(parts)}){tail}"
    if len(one) <= 96:
        return one
    return f"{name}(\n" + "".join(f"    {p},\n" for p in parts) + f"){tail}"


def docstring_md(doc: str | None) -> str:
    """A Google-style docstring as markdown: sections become bold titles and lists."""
    if not doc:
        return "*(no docstring)*"
    out: list[str] = []
    lines = inspect.cleandoc(doc).splitlines()
    section, code = None, False
    for line in lines:
        head = _SECTION.match(line.strip()) if not line.startswith(" ") else None
        if head:
            code = _close(out, code)
            section = head.group(1)
            out += ["", f"**{section}**", ""]
            if section.startswith("Example"):
                out.append("```pycon")
                code = True
            continue
        if code and section and section.startswith("Example"):
            out.append(line[4:] if line.startswith("    ") else line)
            continue
        if section in ("Args", "Arguments", "Attributes", "Raises"):
            _item_line(out, line)
        elif section in ("Returns", "Yields"):
            out.append(line.strip())
        else:
            code = _free_line(out, line, code)
    _close(out, code)
    return "\n".join(out).strip("\n")


def _item_line(out: list[str], line: str) -> None:
    stripped = line.strip()
    if not stripped:
        return
    m = _ITEM.match(stripped)
    if line.startswith("    ") and not line.startswith("     ") and m:
        name, rest = m.groups()
        out.append(f"- `{name}`: {rest}".rstrip())
    else:
        out.append("  " + stripped)


def _free_line(out: list[str], line: str, code: bool) -> bool:
    """Free text; lines indented 4+ spaces are shown as a text block."""
    if line.startswith("    ") and line.strip():
        if not code:
            out += ["", "```text"]
        out.append(line[4:])
        return True
    if code and not line.strip():
        out.append("")
        return True
    code = _close(out, code)
    out.append(line)
    return code


def _close(out: list[str], code: bool) -> bool:
    if code:
        while out and not out[-1].strip():
            out.pop()
        out += ["```", ""]
    return False


def entry(path: str, level: int = 3) -> list[str]:
    obj = resolve(path)
    short = path.rsplit(".", 1)[-1]
    kind = "class" if inspect.isclass(obj) else "function"
    out = [f"{'#' * level} `{path}`", "", f"*{kind}*", "", "```text", signature(short, obj), "```", ""]
    out += [docstring_md(obj.__doc__), ""]
    if inspect.isclass(obj):
        out += members(obj)
    note = NOTES.get(path)
    if note:
        out += [note, ""]
    return out


def members(cls: type) -> list[str]:
    """Public properties and methods defined on the class itself."""
    out = []
    fields = {f.name for f in attrs.fields(cls)} if attrs.has(cls) else set()
    for name, value in cls.__dict__.items():
        if name.startswith("_") or name in fields:
            continue
        if isinstance(value, property):
            text = MEMBER_NOTES.get(f"{cls.__name__}.{name}") or _first_para(value.__doc__)
            out += [f"- `{cls.__name__}.{name}` (property): {text}"]
        elif isinstance(value, (staticmethod, classmethod)) or inspect.isfunction(value):
            fn = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            sig = signature(f"{cls.__name__}.{name}", fn).replace("(self, ", "(").replace("(self)", "()")
            sig = sig.replace("(cls, ", "(")
            out += [f"- `{' '.join(sig.split())}`: {_first_para(fn.__doc__)}"]
    return out + [""] if out else []


def _first_para(doc: str | None) -> str:
    if not doc:
        return "*(no docstring)*"
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def render() -> str:
    import purequant

    covered = {p for _, _, paths in SECTIONS for p in paths}
    missing = tuple(f"purequant.{n}" for n in purequant.__all__ if f"purequant.{n}" not in covered)
    sections = SECTIONS + ((("Other", "Public names not yet sorted into a section.", missing),) if missing else ())
    out = [
        "# API reference",
        "",
        "<!-- Generated by docs/gen_api.py from the code; do not edit by hand. -->",
        "",
        "Every name `import purequant` exports (`purequant.__all__`), then the stage functions "
        "and their records. Signatures and text come from the code itself; regenerate with "
        "`.venv/bin/python docs/gen_api.py` (a test fails when this page is out of date).",
        "Errors are the classes of `purequant.errors`: `PurequantError` and its subclasses "
        "`ConfigError`, `TraceError`, `GraphError`, `StageError`; each carries `.stage`, "
        "`.node_id` and `.hint`.",
        "",
        "## Contents",
        "",
    ]
    for title, _, paths in sections:
        out.append(f"- {title}: " + ", ".join(f"[`{p.rsplit('.', 1)[-1]}`](#{_anchor(p)})" for p in paths))
    out.append("")
    for title, intro, paths in sections:
        out += [f"## {title}", "", intro, ""]
        for path in paths:
            out += entry(path)
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def _anchor(path: str) -> str:
    """GitHub's anchor for a heading `` `path` ``: lowercase, dots and backticks dropped."""
    return re.sub(r"[^\w\- ]", "", path.lower()).replace(" ", "-")


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run .venv/bin/python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

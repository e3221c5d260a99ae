"""Every ```python block of the documentation runs, page by page.

Pages: `docs/**/*.md` and `README.md`. The python blocks of one page run in order, in one
namespace, in a fresh working folder (so dumps and saved files land there), on one torch thread.
Conventions a page may use:

* `<!-- no-run -->` on the line(s) just before a fence: the block is shown, not run. Only for
  shell-only or multi-process (torch.distributed) snippets.
* ```` ```python file=NAME ````: the block is written to NAME in the working folder (which is on
  `sys.path`), to be imported by later blocks, instead of being run.
* a ```` ```text ```` block right after a paragraph ending in "prints": the stdout of the python
  block before it must equal the text block exactly.

A failure names the page, the block number (1-based, python blocks only) and the line of its
fence; tracebacks point at lines of the .md file itself.

Blocks of other pages known to fail are listed in KNOWN_BROKEN with the error they raise: the
page is then reported as xfail *only if* it fails at exactly that block with that error.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
import textwrap
import traceback
from pathlib import Path

import attrs
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)

# (page relative to the repo root, python block number) -> (exception type name, why).
# Blocks of pages owned by others that fail today; reported to their owners, not edited here.
KNOWN_BROKEN: dict[tuple[str, int], tuple[str, str]] = {
}


@attrs.frozen
class Block:
    """One fenced block of a page.

    Attributes:
        lang: the first word of the fence's info string (`python`, `text`, `bash`, ...).
        number: 1-based position among the page's python blocks (0 for other languages).
        line: 1-based line of the opening fence in the page.
        body: the block's text, dedented.
        file: NAME of a `python file=NAME` block, else None.
        run: False for a block marked `<!-- no-run -->`.
        expects_print: a text block introduced by "prints".
    """

    lang: str
    number: int
    line: int
    body: str
    file: str | None = None
    run: bool = True
    expects_print: bool = False


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a page, in order."""
    out, last, number = [], 0, 0
    for m in FENCE.finditer(text):
        info = m.group("info").split()
        lang = info[0] if info else ""
        options = dict(w.split("=", 1) for w in info[1:] if "=" in w)
        before = text[last:m.start()].rstrip()
        body = textwrap.dedent(m.group("body"))
        line = text.count("\n", 0, m.start()) + 1
        if lang == "python":
            number += 1
        out.append(Block(
            lang, number if lang == "python" else 0, line, body, options.get("file"),
            run=not before.endswith(NO_RUN), expects_print=before.endswith("prints"),
        ))
        last = m.end()
    return out


def _rel(page: Path) -> str:
    try:
        return page.resolve().relative_to(ROOT).as_posix()
    except ValueError:  # a page outside the repository (the runner's own tests)
        return page.name


class BlockFailure(Exception):
    """A block failed: carries where, and the original error."""

    def __init__(self, page: str, block: Block, error: BaseException, detail: str) -> None:
        super().__init__(f"{page}: python block {block.number} (line {block.line}) failed:\n{detail}")
        self.page, self.block, self.error = page, block, error


def run_page(page: Path) -> int:
    """Run a page's python blocks in order; return how many ran. Raises BlockFailure."""
    rel, text = _rel(page), page.read_text()
    namespace: dict = {"__name__": "docs_" + re.sub(r"\W", "_", page.stem)}
    printed, ran, last = "", 0, None
    for block in blocks(text):
        if block.lang == "python" and block.file:
            Path(block.file).write_text(block.body)
        elif block.lang == "python" and block.run:
            # Pad with newlines so tracebacks give the line numbers of the .md file.
            out = io.StringIO()
            try:
                code = compile("\n" * block.line + block.body, str(page), "exec")
                with contextlib.redirect_stdout(out):
                    exec(code, namespace)
            except Exception as e:  # noqa: BLE001 -- reported with the page and block
                raise BlockFailure(rel, block, e, traceback.format_exc()) from e
            printed, ran, last = out.getvalue(), ran + 1, block
        elif block.lang == "text" and block.expects_print and last is not None:
            if printed != block.body:
                detail = f"the page shows (line {block.line}):\n{block.body}\nthe block printed:\n{printed}"
                raise BlockFailure(rel, last, AssertionError(detail), detail)
    return ran


@pytest.fixture
def docs_env(tmp_path, monkeypatch):
    """A fresh working folder on sys.path, one torch thread, modules written by pages dropped."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    before = set(sys.modules)
    try:
        yield tmp_path
    finally:
        torch.set_num_threads(threads)
        for name in set(sys.modules) - before:
            mod = sys.modules.get(name)
            if mod is not None and str(getattr(mod, "__file__", "") or "").startswith(str(tmp_path)):
                del sys.modules[name]


@pytest.mark.parametrize("page", pages(), ids=_rel)
def test_page_examples_run(page: Path, docs_env) -> None:
    try:
        run_page(page)
    except BlockFailure as failure:
        known = KNOWN_BROKEN.get((failure.page, failure.block.number))
        if known is not None and type(failure.error).__name__ == known[0]:
            pytest.xfail(f"known broken: {failure.page} block {failure.block.number}: {known[1]}")
        pytest.fail(str(failure))


# ---------------------------------------------------------------- the runner itself
PAGE = """\
Intro.

```python
x = 1
print(x + 1)
```

prints

```text
2
```

<!-- no-run -->
```python
raise SystemExit("not run")
```

```python file=helper.py
VALUE = 41
```

  ```python
  from helper import VALUE
  assert VALUE + x == 42
  ```
"""


def test_blocks_are_split_numbered_and_marked():
    got = blocks(PAGE)
    assert [(b.lang, b.number, b.run, b.file, b.expects_print) for b in got] == [
        ("python", 1, True, None, False), ("text", 0, True, None, True),
        ("python", 2, False, None, False), ("python", 3, True, "helper.py", False),
        ("python", 4, True, None, False),
    ]
    assert got[0].line == 3 and got[4].body.startswith("from helper")


def test_runner_checks_prints_and_names_page_and_block(docs_env):
    page = docs_env / "page.md"
    page.write_text(PAGE)
    assert run_page(page) == 2
    page.write_text(PAGE.replace("x = 1", "x = 2"))
    with pytest.raises(BlockFailure, match=r"python block 1 \(line 3\)"):
        run_page(page)
    broken = PAGE.replace("assert VALUE + x == 42", "pass\n  assert VALUE + x == 0")
    page.write_text(broken)
    with pytest.raises(BlockFailure) as info:
        run_page(page)
    assert info.value.block.number == 4
    line = broken.splitlines().index("  assert VALUE + x == 0") + 1
    assert f'page.md", line {line}' in str(info.value)  # the traceback points into the page


# ---------------------------------------------------------------- the generated API page
def test_api_page_is_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_api", DOCS / "gen_api.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (DOCS / "api.md").read_text() == gen.render(), (
        "docs/api.md is out of date: run .venv/bin/python docs/gen_api.py")


# ---------------------------------------------------------------- links between pages
LINKED_PAGES = ("index.md", "concepts.md", "migration.md", "cookbook.md", "api.md")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lowercased, punctuation but `-` and `_` dropped, spaces to `-`."""
    out = set()
    for m in re.finditer(r"^#{1,6} (.+)$", FENCE.sub("", text), re.M):
        out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


@pytest.mark.parametrize("name", LINKED_PAGES)
def test_links_resolve(name: str) -> None:
    """Every relative link of these pages names an existing page, and an existing heading."""
    text = (DOCS / name).read_text()
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        page = (DOCS / path) if path else DOCS / name
        if not page.is_file():
            broken.append(f"{target}: no such file")
        elif anchor and page.suffix == ".md" and anchor not in anchors(page.read_text()):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"docs/{name}: " + "; ".join(broken)


def test_anchors_follow_github():
    text = "# Migrating from torch.ao's `quantize_fx`\n```text\n# not a heading\n```\n## A module torch.fx cannot trace\n"
    assert anchors(text) == {"migrating-from-torchaos-quantize_fx", "a-module-torchfx-cannot-trace"}

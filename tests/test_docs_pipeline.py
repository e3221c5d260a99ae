"""Runs every example of docs/pipeline.md, in order, and checks the outputs it shows."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

DOC = Path(__file__).parent.parent / "docs" / "pipeline.md"
FENCE = re.compile(r"^```(\w*)(?: file=(\S+))?\n(.*?)^```\n", re.S | re.M)


def blocks(text: str):
    """(language, file name or None, body, the text just before the block)."""
    last = 0
    for m in FENCE.finditer(text):
        yield m.group(1), m.group(2), m.group(3), text[last:m.start()]
        last = m.end()


def test_examples_run_and_print_what_the_page_shows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the page adds "." to it
    namespace: dict = {"__name__": "docs_pipeline"}
    printed, ran, checked = "", 0, 0
    try:
        for lang, filename, body, before in blocks(DOC.read_text()):
            if lang == "python" and filename:
                Path(filename).write_text(body)
            elif lang == "python":
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    exec(compile(body, f"{DOC.name} block {ran}", "exec"), namespace)
                printed, ran = out.getvalue(), ran + 1
            elif lang == "text" and before.strip().endswith("prints"):
                assert printed == body, f"the page shows:\n{body}\nthe example printed:\n{printed}"
                checked += 1
    finally:
        sys.modules.pop("my_stages", None)
    assert ran >= 6 and checked == 2

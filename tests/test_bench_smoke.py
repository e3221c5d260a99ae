"""The benchmark harness runs: bench/run_all.py's quick path on the tiniest model.

This checks the plumbing (every section renders its tables, the page keeps its hand-written
blocks), not any figure: the run is in-process, one round, a few dozen nodes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"

HEADERS = (
    "| model | fx nodes | ours prepare | torch.ao prepare_fx | ours / torch.ao |",
    "| model | ours convert | torch.ao convert_fx | ours / torch.ao |",
    "| model | ours prepare | torch.ao prepare_fx | ours / torch.ao | ours convert |",
    "| fx nodes | ours prepare | ours convert | ours prepare + convert | CPU time |",
    "| fx nodes | symbolic_trace | ours fx->IR->fx | ratio |",
    "| model | float forward | purequant calibrate |",
    "| model | batch | float ms | ours ms | torch.ao ms | ours speed-up | torch.ao speed-up | ours / torch.ao |",
    "| model | kind | ours (torch.ao mapping) | ours default (CPU-aware) | torch.ao FX |",
    "| model | float state_dict | ours params | ours file | torch.ao params |",
    "| model | ours peak RSS (prepare / calibrate / convert) | torch.ao peak RSS (prepare / calibrate / convert) |",
)


def load_run_all():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_quick_run_renders_every_section(tmp_path):
    run_all = load_run_all()
    out = tmp_path / "benchmarks.md"
    page = run_all.main(["--quick", "--models", "digits", "--chain-sizes", "20,50", "--in-process",
                         "--out", str(out)])
    assert out.read_text() == page
    for header in HEADERS:
        assert header in page, header
    for name in [n for n in run_all.ORDER if not n.startswith("keep-")] + ["keep-ir"]:
        assert f"<!-- run_all:{name} -->" in page and f"<!-- /run_all:{name} -->" in page
    assert "## IR cost model" in page  # the hand-written block survives
    assert page.count("**Headline (") >= 2 * 6  # each section's, and again in the header
    assert "| digits |" in page

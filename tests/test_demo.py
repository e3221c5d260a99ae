"""`purequant demo`: the table, the accuracy, the HTML report (also rendered in headless
chromium when /usr/bin/chromium exists), the docs' Python equivalent, and the demo's parts."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch

import purequant
from purequant.cli import main
from purequant.demo import DemoError, DemoOptions
from purequant.demo.layout import NODE_W, layout
from purequant.demo.run import check_lowered, dynamic_qconfig, one_thread
from purequant.demo.stages import line_diff, record_summary
from purequant.demo.train import load_digits_split, train
from purequant.models import digits_cnn, get
from purequant.trace import trace

ROOT = Path(__file__).parent.parent
CHROMIUM = Path("/usr/bin/chromium")
STAGES = ("fuse", "generate_qconfig_map", "find_matches", "find_quants", "insert_observers",
          "lower", "fold_weights", "eliminate_dead_code")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`purequant demo --report-dir <tmp>` run once in-process: (stdout, stderr, report, seconds)."""
    folder = tmp_path_factory.mktemp("demo") / "purequant-report"
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["demo", "--report-dir", str(folder)])
    assert code == 0, err.getvalue()
    return out.getvalue(), err.getvalue(), folder / "report.html", time.perf_counter() - start


def _row(table: str, label: str) -> list[str]:
    line = next(x for x in table.splitlines() if x.startswith(label))
    return re.findall(r"[-+]?\d+(?:\.\d+)?", line[len(label):])


# ------------------------------------------------------------------ the run
def test_table_has_every_row(demo):
    table = demo[0]
    for label in ("accuracy (359 held-out)", "model size (params)", "latency (batch 1, 1 thread)",
                  "SQNR of logits", "time per stage", "  total", *(f"  {s}" for s in STAGES)):
        assert any(line.startswith(label) for line in table.splitlines()), label
    assert "report: " in table and table.rstrip().endswith("report.html")


def test_int8_within_a_point_of_float(demo):
    float_acc, int8_acc, _ = map(float, _row(demo[0], "accuracy (359 held-out)"))
    assert float_acc > 95
    assert abs(float_acc - int8_acc) <= 1.0


def test_int8_is_smaller_and_close(demo):
    float_kib, int8_kib, _ = map(float, _row(demo[0], "model size (params)"))
    assert int8_kib < float_kib / 3
    assert float(_row(demo[0], "SQNR of logits")[0]) > 25


def test_progress_on_stderr_and_fast(demo):
    _, err, _, seconds = demo
    assert "training  [" in err and "epoch 4/4" in err
    assert seconds < 60


# ------------------------------------------------------------------ the report
def test_report_is_one_self_contained_file(demo):
    html = demo[2].read_text()
    assert list(demo[2].parent.iterdir()) == [demo[2]]
    assert html.count("<svg") == 2 and 'class="node kind-quantized"' in html
    for name in STAGES:
        assert f'data-stage="{name}"' in html, name
    external = re.findall(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", html)
    assert not external and "<link" not in html and "@import" not in html


def test_report_has_decision_logs_and_stage_graphs(demo):
    html = demo[2].read_text()
    assert "match: pattern &#x27;conv2d_relu_fused&#x27;" in html or "conv2d_relu_fused" in html
    assert "lower: lowered by handler conv" in html
    assert "folded into %features_0_0" in html  # the decision log of a fused-away batch norm
    observers = re.search(r'data-stage="insert_observers".*?graph changed: \+(\d+) ', html, re.S)
    assert observers and int(observers.group(1)) >= 5  # one per quantized value at least
    assert "(not kept by the run)" not in html


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless check needs /usr/bin/chromium "
                    "(Debian package `chromium`; .ci/run installs it when apt-get is available)")
def test_report_renders_in_headless_chromium(demo, tmp_path):
    url = demo[2].resolve().as_uri()
    flags = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"]
    png = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={png}", url], check=True, capture_output=True, timeout=120)
    assert png.stat().st_size > 20_000
    dom = subprocess.run([*flags, "--dump-dom", url], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-ready="yes"' in dom  # the script ran to its end
    assert len(re.findall(r'<g class="node kind-', dom)) >= 16 + 17
    assert re.search(r'class="node kind-quantized selected" data-id="features_0_0"', dom)  # preselected
    assert re.search(r'<pre>%features_0_0 = call_module.*?match: pattern', dom, re.S)
    for name in STAGES:
        assert re.search(rf'<details class="stage"[^>]*data-stage="{name}"', dom), name


# ------------------------------------------------------------------ the docs and the CLI
def test_getting_started_python_runs(capsys):
    page = (ROOT / "docs" / "getting-started.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len([line for line in code.splitlines() if line.strip()]) <= 11
    with one_thread():
        exec(compile(code, "getting-started.md", "exec"), {"__name__": "getting_started"})
    out = capsys.readouterr().out
    f, q = map(float, re.findall(r"(?:float|int8) accuracy ([\d.]+)%", out))
    assert abs(f - q) <= 1.0 and "match: pattern 'conv2d_relu_fused'" in out


def test_readme_runs_the_demo():
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/pip install -c constraints.txt -e \".[dev,demo]\" && .venv/bin/purequant demo" in readme


def test_zoo_model_without_report(capsys):
    assert main(["demo", "--model", "mlp", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" not in out and "SQNR of logits" in out and "report:" not in out


def test_unknown_model_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--model", "vgg"])
    assert "invalid choice: 'vgg'" in capsys.readouterr().err


def test_nothing_lowered_is_a_clear_error():
    entry = get("mlp")
    prepared = purequant.prepare(entry.build(), {"": None}, entry.example_inputs())
    record = purequant.quantized_record(purequant.convert(purequant.calibrate(prepared, [])))
    with pytest.raises(DemoError) as info:
        check_lowered(record, DemoOptions(model="mlp", mode="dynamic"))
    assert info.value.message == (
        "dynamic quantization of mlp is not supported by the lowering yet (0 matches found, none lowered)")
    assert info.value.stage == "lower" and "--mode static" in info.value.hint


def test_dynamic_path_is_quantize_dynamic():
    entry = get("mlp")
    model, x = entry.build(), entry.example_inputs()
    for mode, dtype in (("dynamic", torch.qint8), ("fp16", torch.float16)):
        ours = purequant.convert(purequant.prepare(model, dynamic_qconfig(mode), x))
        theirs = purequant.quantize_dynamic(model, x, dtype=dtype)
        assert ours.meta["purequant"].folded_graph == theirs.meta["purequant"].folded_graph


# ------------------------------------------------------------------ the parts
def test_split_and_training_are_deterministic():
    a, b = load_digits_split(3), load_digits_split(3)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)
    assert len(a.test_x) == 359 and len(a.train_x) == 1438
    small = type(a)(a.train_x[:128], a.train_y[:128], a.test_x, a.test_y)
    state = torch.get_rng_state()
    with one_thread():
        w1 = train(digits_cnn(seed=1), small, seed=1, epochs=1).state_dict()
        w2 = train(digits_cnn(seed=1), small, seed=1, epochs=1).state_dict()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert torch.equal(state, torch.get_rng_state())


def test_line_diff_matches_nodes_by_id():
    before = "%x = placeholder x()\n%a = call_function f(%x)\n%b = call_function g(%a)\n"
    after = "%x = placeholder x()\n%a = call_function f(%x, 1)\n%c = call_function h(%a)\n"
    diff = line_diff(before, after)
    assert diff["added"] == ("%c = call_function h(%a)",)
    assert diff["removed"] == ("%b = call_function g(%a)",)
    assert diff["modified"] == (("%a = call_function f(%x)", "%a = call_function f(%x, 1)"),)


def test_record_summary_counts_fields():
    import attrs

    @attrs.frozen
    class ToyRecord:
        target: str
        lowered: tuple = ()
        skipped: dict = attrs.field(factory=dict)

    assert record_summary(ToyRecord("native", (1, 2))) == "ToyRecord: target=native, lowered 2, skipped 0"
    assert record_summary(None) == "NoneType"


@pytest.mark.parametrize("name", ["digits", "resnet18", "chain_linear"])
def test_layout_boxes_never_overlap_and_edges_are_complete(name):
    entry = get(name)
    graph = trace(entry.build(), entry.example_inputs()).graph
    lay = layout(graph)
    assert set(lay.centres) == set(graph.ids())
    rows: dict[float, list[float]] = {}
    for x, y in lay.centres.values():
        rows.setdefault(y, []).append(x)
    for xs in rows.values():
        xs.sort()
        assert all(b - a >= NODE_W for a, b in zip(xs, xs[1:]))
    assert all(x - NODE_W / 2 >= 0 and x + NODE_W / 2 <= lay.width for x, _ in lay.centres.values())
    expected = {(i, n.id) for n in graph for i in n.input_ids()}
    assert {(s, d) for s, d, _ in lay.edges} == expected

"""`purequant quantize`, `explain`, `show` of saved models and `--dump`, run in-process through
`main`, and every example of docs/cli.md (and the shell lines of docs/saving.md)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

import purequant
from purequant.backends import quantized_engine
from purequant.cli import main
from purequant.errors import PurequantError
from purequant.ir import check_graph, parse_graph
from purequant.models import ZOO
from purequant.saving import read_artifact

pytestmark = pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions")
torch.set_num_threads(1)
DOCS = Path(__file__).parent.parent / "docs"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Each test in its own folder; modules imported from it are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and str(tmp_path) in sys.modules[name].__file__:
            del sys.modules[name]


def quantize(capsys, *argv: str) -> str:
    code = main(["quantize", *argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _error(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("  hint: ")
    return lines


# ------------------------------------------------------------------ quantize
def test_quantize_a_zoo_model_writes_a_loadable_file_and_a_summary(capsys):
    out = quantize(capsys, "zoo:digits", "--calibrate", "random", "--batches", "3", "--out", "digits.pq")
    lines = out.splitlines()
    assert lines[0] == "quantized zoo:digits (static, native, backend x86) -> digits.pq"
    assert lines[1] == "  calibration: 3 batches of random inputs"
    assert lines[2].startswith("  ops quantized: 8  (conv2d_relu x3, MaxPool2d x2")
    assert lines[3] == "  ops float:     0"
    assert re.match(r"  size: 0\.16 MB float parameters -> 0\.0\d MB saved ones \(0\.0\d MB file\)", lines[4])
    sqnr = float(re.match(r"  SQNR: ([\d.]+) dB on one random batch", lines[5]).group(1))
    assert sqnr > 25
    assert len(lines) <= 10  # one screen
    loaded = purequant.load("digits.pq")
    assert loaded.meta["purequant"].records["lower"].target == "native"


def test_the_summary_sqnr_is_what_the_file_gives(capsys):
    out = quantize(capsys, "zoo:mlp", "--calibrate", "random", "--out", "mlp.pq")
    shown = float(re.search(r"SQNR: ([\d.]+) dB", out).group(1))
    entry = ZOO["mlp"]
    batch = entry.make_batch(4, torch.Generator().manual_seed(10_000))
    with torch.no_grad(), quantized_engine("x86"):
        want, got = entry.build()(*batch), purequant.load("mlp.pq")(*batch)
    sqnr = float(10 * torch.log10(want.double().pow(2).sum() / (want.double() - got.double()).pow(2).sum()))
    assert shown == pytest.approx(sqnr, abs=0.05)


@pytest.mark.parametrize("mode,kernel", [("dynamic", "linear_dynamic"), ("fp16", "linear_dynamic_fp16")])
def test_dynamic_modes_need_no_calibration(capsys, mode, kernel):
    out = quantize(capsys, "zoo:mlp", "--mode", mode, "--out", "mlp.pq")
    assert "calibration" not in out and f"{kernel}" in out
    record = purequant.load("mlp.pq").meta["purequant"]
    assert kernel in {n.target.rsplit(".", 1)[-1] for n in record.folded_graph}


def test_reference_lowering(capsys):
    quantize(capsys, "zoo:digits", "--calibrate", "random", "--batches", "2", "--reference", "--out", "r.pq")
    artifact = read_artifact("r.pq", tensors=False)
    assert artifact.reference and any("quantized_decomposed" in n.target for n in artifact.graph)


FACTORY = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()


def not_a_model():
    return 42
"""


@pytest.mark.parametrize("spec", ["factories.py:build", "factories:build"])
def test_a_user_factory_by_path_or_module_name(capsys, in_tmp, spec):
    (in_tmp / "factories.py").write_text(FACTORY)
    out = quantize(capsys, spec, "--example-shape", "2,6", "--calibrate", "random", "--out", "f.pq")
    assert out.startswith(f"quantized {spec} (static") and "linear_relu" in out
    x = torch.randn(4, 6)
    with torch.no_grad(), quantized_engine("x86"):
        assert purequant.load("f.pq")(x).shape == (4, 3)


def test_random_calibration_is_seeded(capsys):
    args = ("zoo:digits", "--calibrate", "random", "--batches", "2")
    quantize(capsys, *args, "--out", "a.pq")
    quantize(capsys, *args, "--out", "b.pq")
    quantize(capsys, *args, "--seed", "3", "--example-shape", "1,1,8,8", "--out", "c.pq")
    assert Path("a.pq").read_bytes() == Path("b.pq").read_bytes() != Path("c.pq").read_bytes()


def test_calibrate_from_a_tensor_file_or_a_list(capsys):
    torch.save(torch.rand(5, 2, 1, 8, 8), "stacked.pt")
    out = quantize(capsys, "zoo:digits", "--calibrate", "stacked.pt", "--out", "a.pq")
    assert "calibration: 5 batches of stacked.pt" in out
    torch.save([torch.rand(3, 1, 8, 8) for _ in range(4)], "listed.pt")
    out = quantize(capsys, "zoo:digits", "--calibrate", "listed.pt", "--batches", "2", "--out", "b.pq")
    assert "calibration: 2 batches of listed.pt" in out


def test_token_inputs(capsys):
    """Long inputs for an embedding model: random ids below --int-high."""
    (Path("tokens.py")).write_text(
        "import torch\nfrom torch import nn\n\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(32, 2)).eval()\n")
    out = quantize(capsys, "tokens.py:build", "--example-shape", "2,4", "--example-dtype", "long",
                   "--int-high", "50", "--calibrate", "random", "--out", "t.pq")
    assert "SQNR" in out


def test_progress_bar_only_on_a_terminal(capsys, monkeypatch):
    quantize(capsys, "zoo:mlp", "--calibrate", "random", "--batches", "3", "--out", "a.pq")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["quantize", "zoo:mlp", "--calibrate", "random", "--batches", "3", "--out", "b.pq"]) == 0
    err = capsys.readouterr().err
    assert "calibrating [" in err and err.endswith("] 3/3\n") and "\r" in err
    assert main(["quantize", "zoo:mlp", "--calibrate", "random", "--quiet", "--out", "c.pq"]) == 0
    assert capsys.readouterr().err == ""


def test_dump_then_replay_every_stage(capsys):
    quantize(capsys, "zoo:digits", "--calibrate", "random", "--batches", "2", "--out", "d.pq", "--dump", "dump")
    folders = {p.name.split("_", 1)[1]: p.name for p in Path("dump").iterdir() if p.name != "tensors"}
    assert set(folders) == {"fuse", "generate_qconfig_map", "find_matches", "find_quants", "insert_observers",
                            "lower", "fold_weights", "eliminate_dead_code"}
    assert folders["fuse"] == "000_fuse" and folders["lower"] == "005_lower"
    assert folders["eliminate_dead_code"] == "007_eliminate_dead_code"
    for stage in folders:
        assert main(["replay", f"dump/{folders[stage]}"]) == 0, stage
        assert capsys.readouterr().out.startswith("equal")


# ------------------------------------------------------------------ show and explain
def test_show_prints_the_saved_graph(capsys):
    quantize(capsys, "zoo:digits", "--calibrate", "random", "--batches", "2", "--out", "digits.pq")
    assert main(["show", "digits.pq"]) == 0
    graph = check_graph(parse_graph(capsys.readouterr().out))
    assert graph == read_artifact("digits.pq", tensors=False).graph
    assert any(n.target == "torch.ops.quantized.conv2d_relu" for n in graph)


def test_explain_reads_the_file_only(capsys):
    quantize(capsys, "zoo:digits", "--calibrate", "random", "--batches", "2", "--out", "digits.pq")
    assert main(["explain", "digits.pq", "classifier_0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("%classifier_0 = call_module classifier.0(%flatten)")
    assert lines[1] == "fuse: linear_relu (root) -> purequant.nn.LinearReLU"
    assert lines[-1].startswith("saved: %classifier_0 = call_function torch.ops.quantized.linear_relu(")


# ------------------------------------------------------------------ errors
ERRORS = [
    (["zoo:digits", "--out", "x.pq"], "error: static quantization needs calibration data"),
    (["zoo:mlp", "--mode", "dynamic", "--calibrate", "random", "--out", "x.pq"],
     "error: --calibrate applies to static quantization, not --mode dynamic"),
    (["zoo:mlp", "--mode", "fp16", "--reference", "--out", "x.pq"],
     "error: --reference applies to static quantization, not --mode fp16"),
    (["zoo:nope", "--calibrate", "random", "--out", "x.pq"], "error: unknown model 'nope'"),
    (["nocolon", "--calibrate", "random", "--out", "x.pq"], "error: cannot read the model 'nocolon'"),
    (["missing.py:build", "--calibrate", "random", "--out", "x.pq"], "error: no such file: missing.py"),
    (["no_such_pkg_xyz:build", "--calibrate", "random", "--out", "x.pq"], "error: cannot import no_such_pkg_xyz"),
    (["factories.py:nope", "--calibrate", "random", "--out", "x.pq"], "error: factories.py has no function 'nope'"),
    (["factories.py:not_a_model", "--calibrate", "random", "--out", "x.pq"],
     "error: factories.py:not_a_model() returned an object of type int"),
    (["factories.py:build", "--calibrate", "random", "--out", "x.pq"], "error: --calibrate random needs the input shape"),
    (["zoo:digits", "--calibrate", "missing.pt", "--out", "x.pq"], "error: --calibrate missing.pt: no such file"),
    (["zoo:digits", "--calibrate", "dict.pt", "--out", "x.pq"], "error: dict.pt holds a dict"),
    (["zoo:digits", "--calibrate", "object.pt", "--out", "x.pq"],
     "error: cannot read object.pt with torch.load(weights_only=True): Weights only load failed"),
    (["json.py:build", "--calibrate", "random", "--out", "x.pq"],
     "error: cannot import json.py: a module named 'json' is already loaded"),
]


@pytest.mark.parametrize("argv,first", ERRORS, ids=[e[1][7:40] for e in ERRORS])
def test_errors_are_one_line_and_a_hint(capsys, in_tmp, argv, first):
    (in_tmp / "factories.py").write_text(FACTORY)
    (in_tmp / "json.py").write_text(FACTORY)
    torch.save({"a": torch.zeros(1)}, in_tmp / "dict.pt")
    torch.save({"a": Path(".")}, in_tmp / "object.pt")
    assert main(["quantize", *argv]) == 2
    assert _error(capsys)[0].startswith(first)
    assert not (in_tmp / "x.pq").exists()


def test_explain_errors(capsys, in_tmp):
    (in_tmp / "junk.pq").write_bytes(b"junk")
    assert main(["explain", "junk.pq", "x"]) == 2
    assert _error(capsys)[0] == "error: junk.pq is not a purequant model file (not a zip archive)"
    quantize(capsys, "zoo:mlp", "--mode", "dynamic", "--out", "m.pq")
    assert main(["explain", "m.pq", "nope"]) == 2
    assert _error(capsys) == ["error: no node %nope in this model",
                              "  hint: node ids are printed by `purequant show MODEL.pq`"]
    assert main(["show", "missing.pq"]) == 2
    assert _error(capsys)[0] == "error: no such file: missing.pq"


def test_debug_raises(capsys):
    with pytest.raises(PurequantError, match="static quantization needs calibration data"):
        main(["--debug", "quantize", "zoo:digits", "--out", "x.pq"])


def test_a_bad_shape_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["quantize", "zoo:digits", "--example-shape", "1,x", "--out", "x.pq"])
    assert info.value.code == 2 and "is not a comma-separated shape" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["quantize", "explain"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith(f"usage: purequant {command}")


# ------------------------------------------------------------------ the pages
FENCE = re.compile(r"^```(\w*)(?: file=(\S+))?\n(.*?)^```\n", re.S | re.M)
EXPECT = re.compile(r"\s+# exit (\d+)$")


def shell_lines(body: str) -> list[tuple[list[str], int]]:
    """(argv after `purequant`, expected exit code) per command line of a shell block."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = EXPECT.search(line)
        argv = shlex.split(EXPECT.sub("", line))
        assert argv[0] == "purequant", line
        out.append((argv[1:], int(m.group(1)) if m else 0))
    return out


def run_page(page: Path, capsys, *, python: bool = True) -> int:
    ran = 0
    namespace: dict = {"__name__": "docs_cli"}
    for lang, filename, body in FENCE.findall(page.read_text()):
        if lang == "python" and filename:
            Path(filename).write_text(body)
        elif lang == "python" and python:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(body, f"{page.name}", "exec"), namespace)
        elif lang == "shell":
            for argv, code in shell_lines(body):
                got = main(argv)
                captured = capsys.readouterr()
                assert got == code, f"{page.name}: purequant {shlex.join(argv)} exited {got}:\n{captured.err}"
                ran += 1
    return ran


def test_cli_page_examples_run(capsys):
    assert run_page(DOCS / "cli.md", capsys) >= 15


def test_cli_page_error_example_prints_what_it_shows(capsys):
    text = (DOCS / "cli.md").read_text()
    shown = text.rsplit("```text\n", 1)[1].split("```")[0]
    assert main(["quantize", "zoo:digits", "--out", "nothing.pq"]) == 2
    assert capsys.readouterr().err == shown


def test_saving_page_shell_examples_run(capsys):
    assert run_page(DOCS / "saving.md", capsys, python=False) == 3

"""The command line, run in-process: output, exit codes, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from purequant.cli import main
from purequant.errors import PurequantError
from purequant.ir import check_graph, parse_graph
from purequant.pipeline import CheckWellFormed, Dump, PipelineState, run, stage
from purequant.stages.eliminate_dead_code import eliminate_dead_code

GOLDEN = Path(__file__).parent / "goldens" / "eliminate_dead_code" / "dead_chain.before"


def test_show_traces_a_zoo_model(capsys):
    assert main(["show", "mlp"]) == 0
    out = capsys.readouterr().out
    graph = check_graph(parse_graph(out))
    assert [n.op for n in graph][0] == "placeholder" and graph.output().op == "output"
    assert sum(n.op == "call_module" for n in graph) == 5  # 3 Linear + 2 ReLU


def test_show_without_meta(capsys):
    assert main(["show", "mlp", "--no-meta"]) == 0
    assert "#" not in capsys.readouterr().out


def test_show_reads_a_saved_graph(capsys):
    assert main(["show", str(GOLDEN)]) == 0
    assert capsys.readouterr().out == GOLDEN.read_text()


def _error(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return captured.err.splitlines()


def test_unknown_model_is_one_line_and_a_hint(capsys):
    assert main(["show", "resnet1800"]) == 2
    lines = _error(capsys)
    assert len(lines) == 2
    assert lines[0].startswith("error: unknown model 'resnet1800'") and "resnet18" in lines[0]
    assert lines[1].startswith("  hint: ")


def test_unsupported_artifact(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"")
    assert main(["show", str(tmp_path / "model.pt")]) == 2
    assert _error(capsys)[0] == f"error: cannot show {tmp_path / 'model.pt'}: unknown artifact type"


def test_malformed_graph_file(tmp_path, capsys):
    bad = tmp_path / "bad.graph"
    bad.write_text("%x = placeholder x()\n%y = call_function torch.relu(%nope)\n")
    assert main(["show", str(bad)]) == 2
    assert "%y reads %nope" in _error(capsys)[0]


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(PurequantError):
        main(["--debug", "show", "resnet1800"])


def _dump(tmp_path: Path) -> Path:
    state = PipelineState(parse_graph(GOLDEN.read_text()))
    run([stage(eliminate_dead_code), stage(eliminate_dead_code, name="again")], state,
        instruments=(CheckWellFormed(), Dump(tmp_path)))
    return tmp_path


def test_replay_equal_exits_0(tmp_path, capsys):
    root = _dump(tmp_path)
    for folder in ("000_eliminate_dead_code", "001_again"):
        assert main(["replay", str(root / folder)]) == 0
        assert capsys.readouterr().out.startswith("equal")


def test_replay_different_exits_1_and_prints_the_diff(tmp_path, capsys):
    folder = _dump(tmp_path) / "000_eliminate_dead_code"
    (folder / "output.graph").write_text(GOLDEN.read_text())  # pretend nothing was removed
    assert main(["replay", str(folder)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("different:") and "-%relu = call_function torch.relu(%linear)" in out
    assert "record differs" not in out  # only the graph was tampered with


def test_replay_of_a_non_dump_exits_2(tmp_path, capsys):
    assert main(["replay", str(tmp_path)]) == 2
    lines = _error(capsys)
    assert "is not a stage dump folder" in lines[0] and "hint: pass a folder such as" in lines[1]


@pytest.mark.parametrize("argv", [["--help"], ["show", "--help"], ["replay", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0 and "usage: purequant" in capsys.readouterr().out


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2 and "COMMAND" in capsys.readouterr().err

"""The stage protocol, the runner and its instruments, error notes, dump and replay."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from attrs import field, frozen
from pyrsistent import pmap

from purequant import replay
from purequant.errors import ConfigError, GraphError, PurequantError, StageError
from purequant.ir import ModuleSpec, Node, Ref, parse_graph
from purequant.pipeline import (
    CheckWellFormed,
    Dump,
    Instrument,
    PhaseCheck,
    PhaseRule,
    PipelineState,
    StageSpec,
    Timing,
    run,
    stage,
)
from purequant.pipeline.codec import CodecError
from purequant.pipeline.dump import DumpError
from purequant.stages.eliminate_dead_code import DeadCodeRecord, eliminate_dead_code

HERE = (f"{__name__}.",)  # this module's stages are trusted only when a test says so
GRAPH = """\
%x = placeholder x()
%fc = call_module fc(%x)  # src='model.py:12'
%relu = call_function torch.relu(%fc)
%neg = call_function operator.neg(%x)
%output = output output(%relu)
"""


def _state(**kw) -> PipelineState:
    params = {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.zeros(2)}
    modules = {"fc": ModuleSpec("torch.nn.Linear", {"in_features": 3, "training": False},
                                {"weight": "fc.weight", "bias": "fc.bias"})}
    return PipelineState(parse_graph(GRAPH), kw.get("params", params), kw.get("modules", modules))


# ------------------------------------------------------------ stage functions
def count_nodes(graph):
    return pmap({"nodes": len(graph)})


def scale_weights(graph, params, *, factor):
    """A transform of the params table: (graph, params, record)."""
    new = {p: t * factor for p, t in params.items() if p.endswith("weight")}
    return graph, params.update(new), tuple(sorted(new))


def add_marker(graph, counts, *, prefix="marker"):
    """Reads the record of `count_nodes`; inserts a node after %relu."""
    nid = graph.fresh_id(prefix)
    node = Node(nid, "call_function", "torch.clone", (Ref("relu"),), meta={"src": "stage"})
    return graph.insert_after("relu", node), pmap({"inserted": nid, "seen": counts["nodes"]})


def return_graph(graph):
    return graph


def return_too_long(graph, params):
    return graph, params, params, None


def raise_on_relu(graph):
    raise StageError("cannot handle this relu", node_id="relu", hint="remove it")


def raise_value_error(graph):
    raise ValueError("boom")


def break_users(graph):
    return graph._evolve(users_map=graph.users_map.set("x", ())), None


def insert_observer(graph):
    node = Node("obs", "call_function", "purequant.observe", (Ref("relu"),))
    return graph.insert_after("relu", node), None


def nested_failure(graph):
    run([stage(raise_on_relu)], PipelineState(graph))


# ------------------------------------------------------------ calling convention
def test_analysis_stage_stores_its_record_and_keeps_the_graph():
    s0 = _state()
    s1, (rec,) = run([stage(count_nodes)], s0)
    assert s1.graph is s0.graph and s1.params is s0.params
    assert s1.records["count_nodes"] == pmap({"nodes": 5}) == rec.record
    assert rec.input_digest == rec.output_digest and rec.params_changed == pmap()


def test_reads_are_positional_and_options_are_keywords():
    stages = [stage(count_nodes, name="counts"), stage(add_marker, reads=("counts",), prefix="probe")]
    s, recs = run(stages, _state())
    assert s.records["add_marker"] == pmap({"inserted": "probe", "seen": 5})
    assert "probe" in s.graph and recs[1].options == pmap({"prefix": "probe"})
    assert recs[1].input_digest != recs[1].output_digest


def test_params_transform_and_params_changed():
    s0 = _state()
    s1, (rec,) = run([stage(scale_weights, uses_params=True, factor=2.0)], s0)
    assert torch.equal(s1.params["fc.weight"], 2 * s0.params["fc.weight"])
    assert s1.params["fc.bias"] is s0.params["fc.bias"]
    assert list(rec.params_changed) == ["fc.weight"]
    assert torch.equal(s0.params["fc.weight"], torch.arange(6.0).reshape(2, 3))  # input untouched


def test_transform_may_omit_tables_it_does_not_change():
    spec = stage(eliminate_dead_code, uses_modules=True)
    s0 = _state()
    s1, (rec,) = run([spec], s0)
    # eliminate_dead_code reads the modules table and returns (graph, record): allowed.
    assert rec.record == DeadCodeRecord(("neg",)) and s1.modules is s0.modules


@pytest.mark.parametrize("fn, flags, message", [
    (return_graph, {}, "bare Graph"),
    (return_too_long, {"uses_params": True}, "tuple of 4"),
])
def test_convention_violations_are_named(fn, flags, message):
    with pytest.raises(StageError, match=message) as info:
        run([stage(fn, **flags)], _state())
    assert "calling convention" in str(info.value)


def test_missing_record_is_a_clear_error():
    with pytest.raises(StageError, match="reads record 'counts'") as info:
        run([stage(add_marker, reads=("counts",))], _state())
    assert "run the stage named 'counts'" in info.value.hint


def test_spec_refuses_closures_lambdas_and_bad_names_and_options():
    with pytest.raises(ConfigError, match="module-level"):
        StageSpec("anonymous", lambda g: g)
    with pytest.raises(ConfigError, match="identifier"):
        stage(count_nodes, name="has space")
    with pytest.raises(ConfigError, match="not plain data"):
        stage(count_nodes, bad=[1, 2])


def test_runs_are_deterministic_and_seconds_are_outside_equality():
    stages = [stage(count_nodes, name="counts"), stage(add_marker, reads=("counts",)),
              stage(eliminate_dead_code)]
    a, recs_a = run(stages, _state())
    b, recs_b = run(stages, _state())
    assert recs_a == recs_b and a.graph == b.graph
    assert recs_a[2].record == DeadCodeRecord(("marker", "neg"))


# ------------------------------------------------------------------ instruments
@frozen
class Recorder(Instrument):
    tag: str
    log: list = field(factory=list, eq=False)

    def before(self, ctx, state):
        self.log.append(f"{self.tag}.before.{ctx.spec.name}")

    def after(self, ctx, state, out, record):
        self.log.append(f"{self.tag}.after.{ctx.spec.name}")


def test_instruments_nest_like_context_managers():
    log: list = []
    a, b = Recorder("a", log), Recorder("b", log)
    run([stage(count_nodes)], _state(), instruments=(a, b))
    assert log == ["a.before.count_nodes", "b.before.count_nodes",
                   "b.after.count_nodes", "a.after.count_nodes"]


def test_well_formedness_is_checked_after_each_stage():
    with pytest.raises(GraphError, match="users index") as info:
        run([stage(count_nodes), stage(break_users)], _state())
    notes = "\n".join(info.value.__notes__)
    assert "in stage 'break_users'" in notes and "stages already run: count_nodes" in notes


def test_phase_vocabulary_is_data_and_inherited():
    rules = {"OBSERVED": PhaseRule(), "LOWERED": PhaseRule(forbid_prefixes=("purequant.observe",))}
    check = (CheckWellFormed(), PhaseCheck(rules))
    run([stage(insert_observer, phase="OBSERVED")], _state(), instruments=check)
    with pytest.raises(StageError, match="target purequant.observe is not allowed in phase LOWERED") as info:
        # The second stage declares no phase: it inherits LOWERED from the first.
        run([stage(count_nodes, phase="LOWERED"), stage(insert_observer)], _state(), instruments=check)
    assert info.value.node_id == "obs" and info.value.stage == "insert_observer"
    with pytest.raises(ConfigError, match="unknown phase 'LOWRED'"):
        run([stage(count_nodes, phase="LOWRED")], _state(), instruments=check)


def test_phase_rule_module_types_and_ops():
    rule = PhaseRule(forbid_module_types={"torch.nn.Linear"})
    s = _state()
    assert rule.violation(s.graph, s.modules) == ("fc", "module type torch.nn.Linear")
    assert PhaseRule(forbid_ops={"call_module"}).violation(s.graph, pmap()) == ("fc", "op call_module")
    assert PhaseRule().violation(s.graph, s.modules) is None


def test_timing_prints_one_line_per_stage():
    out = io.StringIO()
    run([stage(count_nodes), stage(eliminate_dead_code)], _state(), instruments=(Timing(out),))
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["000 count_nodes", "001 eliminate_dead_code"]


# ------------------------------------------------------------------ error notes
def test_purequant_errors_get_stage_notes_once():
    with pytest.raises(StageError) as info:
        run([stage(count_nodes), stage(raise_on_relu)], _state())
    e = info.value
    assert e.stage == "raise_on_relu" and e.node_id == "relu"
    notes = e.__notes__
    assert notes[0].startswith("in stage 'raise_on_relu' (#1, test_pipeline.raise_on_relu)")
    assert notes[1] == "stages already run: count_nodes"
    assert notes[2] == "node: %relu = call_function torch.relu(%fc)"
    assert notes[3] == "from: (no source location recorded)"
    assert ">> %relu = call_function torch.relu(%fc)" in notes[4]


def test_notes_show_the_source_of_the_node():
    def_src = PipelineState(parse_graph(GRAPH.replace("torch.relu(%fc)", "torch.relu(%fc)  # src='model.py:13'")))
    with pytest.raises(StageError) as info:
        run([stage(raise_on_relu)], def_src)
    assert "from: model.py:13" in info.value.__notes__


def test_nested_runs_add_notes_once():
    with pytest.raises(StageError) as info:
        run([stage(nested_failure)], _state())
    assert sum(n.startswith("in stage") for n in info.value.__notes__) == 1


def test_other_exceptions_are_wrapped_with_cause():
    with pytest.raises(StageError, match="ValueError: boom") as info:
        run([stage(raise_value_error)], _state())
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.__notes__[0].startswith("in stage 'raise_value_error'")
    assert isinstance(info.value, PurequantError)


# ------------------------------------------------------------------ dump and replay
TWO_STAGES = [stage(scale_weights, uses_params=True, factor=3.0), stage(eliminate_dead_code)]


def _dump(tmp_path: Path, stages=TWO_STAGES, state=None) -> Path:
    run(stages, state or _state(), instruments=(CheckWellFormed(), Dump(tmp_path)))
    return tmp_path


def test_dump_layout(tmp_path):
    root = _dump(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["000_scale_weights", "001_eliminate_dead_code", "tensors"]
    folder = root / "001_eliminate_dead_code"
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "spec.json", "input.graph", "output.graph", "records_in.json", "record.json",
        "params_in.json", "params_out.json", "modules_in.json", "modules_out.json"])
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["fn"] == "purequant.stages.eliminate_dead_code.eliminate_dead_code"
    assert spec["done"] == ["scale_weights"]
    # Three distinct tensors: weight before and after scaling, and the bias (stored once).
    assert len(list((root / "tensors").iterdir())) == 3
    for f in (root / "tensors").iterdir():
        assert isinstance(torch.load(f, weights_only=True), torch.Tensor)


def test_replay_each_stage_of_a_two_stage_run_is_equal(tmp_path):
    root = _dump(tmp_path)
    for folder in sorted(p for p in root.iterdir() if p.name != "tensors"):
        result = replay(folder, trust=HERE)
        assert result.equal, result.format()


def test_replay_refuses_untrusted_stage_functions(tmp_path):
    root = _dump(tmp_path)
    with pytest.raises(CodecError, match="refusing to load 'test_pipeline.scale_weights'"):
        replay(root / "000_scale_weights")


def test_tampered_output_graph_is_reported(tmp_path):
    folder = _dump(tmp_path) / "001_eliminate_dead_code"
    text = (folder / "output.graph").read_text()
    (folder / "output.graph").write_text(text.replace("torch.relu", "torch.sigmoid"))
    result = replay(folder)
    assert not result.equal
    assert "-%relu = call_function torch.sigmoid(%fc)" in result.graph_diff
    assert "+%relu = call_function torch.relu(%fc)" in result.graph_diff
    assert result.record_diff == () and "different:" in result.format()


def test_tampered_record_and_params_are_reported(tmp_path):
    root = _dump(tmp_path)
    folder = root / "001_eliminate_dead_code"
    (folder / "record.json").write_text(json.dumps(
        {"$type": "purequant.stages.eliminate_dead_code.DeadCodeRecord", "removed": {"$tuple": ["fc"]}}))
    params = json.loads((folder / "params_out.json").read_text())
    params["fc.weight"] = "0" * 64
    (folder / "params_out.json").write_text(json.dumps(params))
    result = replay(folder)
    assert result.record_diff == ("$.removed[0]",) and result.params_diff == ("fc.weight",)


def test_tampered_tensor_is_detected(tmp_path):
    root = _dump(tmp_path)
    bias = json.loads((root / "001_eliminate_dead_code" / "params_in.json").read_text())["fc.bias"]
    torch.save(torch.ones(2), root / "tensors" / f"{bias}.pt")
    with pytest.raises(PurequantError, match="does not hold the tensor"):
        replay(root / "001_eliminate_dead_code")


def test_failed_stage_leaves_a_dump_that_reproduces_it(tmp_path):
    with pytest.raises(StageError):
        _dump(tmp_path, [stage(count_nodes), stage(raise_on_relu)], PipelineState(parse_graph(GRAPH)))
    folder = tmp_path / "001_raise_on_relu"
    assert (folder / "input.graph").exists() and not (folder / "output.graph").exists()
    with pytest.raises(StageError, match="cannot handle this relu") as info:
        replay(folder, trust=HERE)
    assert "stages already run: count_nodes" in info.value.__notes__


def test_replay_of_a_folder_that_is_not_a_dump(tmp_path):
    with pytest.raises(DumpError, match="not a stage dump folder"):
        replay(tmp_path)


def test_spec_round_trips_through_the_dump(tmp_path):
    from purequant.pipeline import load_stage

    _dump(tmp_path)
    loaded = load_stage(tmp_path / "000_scale_weights", trust=HERE)
    assert loaded.ctx.spec == StageSpec("scale_weights", scale_weights, (), True, False, pmap({"factor": 3.0}))

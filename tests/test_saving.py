"""purequant.save / purequant.load: bit-identical round trips, plain members, no pickle of objects,
clear errors on damaged or hostile files, and the torch.ao model that torch.save cannot keep."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import purequant
from purequant.backends import quantized_engine
from purequant.ir import check_graph, parse_graph, print_graph
from purequant.models import ZOO
from purequant.saving import MEMBERS, ArtifactError, Loaded, explain, read_artifact

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions"),
    pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max"),
]
torch.set_num_threads(1)

MODES = ("static", "reference", "dynamic")
CASES = [(n, m) for n in ("digits", "mlp", "resnet18", "bert") for m in MODES] + [("mlp", "fp16")]
_CACHE: dict = {}


def quantized(name: str, mode: str) -> torch.fx.GraphModule:
    """The zoo model `name` quantized in `mode` (cached: quantizing ResNet-18 takes seconds)."""
    key = (name, mode)
    if key not in _CACHE:
        entry = ZOO[name]
        model, example = entry.build(), entry.example_inputs()
        try:
            if mode in ("static", "reference"):
                q = purequant.quantize(model, example, list(entry.calibration_batches(2)),
                                       reference=mode == "reference")
            else:
                dtype = torch.float16 if mode == "fp16" else torch.qint8
                q = purequant.quantize_dynamic(model, example, dtype=dtype)
        except purequant.errors.PurequantError as e:
            q = e
        _CACHE[key] = q
    if isinstance(_CACHE[key], Exception):
        # Quantizing is not what this file tests; a save or load failure still fails.
        pytest.xfail(f"quantize itself fails before saving: {_CACHE[key]}")
    return _CACHE[key]


def run(gm: torch.nn.Module, inputs: tuple) -> torch.Tensor:
    with torch.no_grad(), quantized_engine("x86"):
        return gm(*inputs)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name,mode", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_load_gives_bit_identical_outputs(name, mode, tmp_path):
    q = quantized(name, mode)
    path = purequant.save(q, tmp_path / "model.pq")
    loaded = purequant.load(path)
    entry = ZOO[name]
    for batch in (entry.example_inputs(2), next(entry.calibration_batches(1, batch=3))):
        assert torch.equal(run(q, batch), run(loaded, batch))
    record = loaded.meta["purequant"]
    assert isinstance(record, Loaded)
    assert (record.backend, record.reference) == ("x86", mode == "reference")
    assert record.stage_records == q.meta["purequant"].stage_records


def test_saving_is_deterministic_and_a_loaded_model_saves_to_the_same_bytes(tmp_path):
    q = quantized("digits", "static")
    a = purequant.save(q, tmp_path / "a.pq").read_bytes()
    b = purequant.save(q, tmp_path / "b.pq").read_bytes()
    c = purequant.save(purequant.load(tmp_path / "a.pq"), tmp_path / "c.pq").read_bytes()
    assert a == b == c


SAVE_MLP = """
import sys, torch, purequant
from purequant.models import ZOO
torch.set_num_threads(1)
e = ZOO["mlp"]
q = purequant.quantize(e.build(), e.example_inputs(), list(e.calibration_batches(2)))
purequant.save(q, sys.argv[1])
"""


def test_same_bytes_from_a_process_with_another_hash_seed(tmp_path):
    """Maps iterate in hash order, which differs between processes; the file must not."""
    import os
    import subprocess

    seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    env = {**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-W", "ignore", "-c", SAVE_MLP, str(tmp_path / "there.pq")], env=env, check=True)
    exec(compile(SAVE_MLP.replace("sys.argv[1]", repr(str(tmp_path / "here.pq"))), "save_mlp", "exec"), {})
    assert (tmp_path / "here.pq").read_bytes() == (tmp_path / "there.pq").read_bytes()


def test_members_are_plain_text_json_and_weights_only_tensors(tmp_path):
    path = purequant.save(quantized("digits", "static"), tmp_path / "digits.pq")
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted((*MEMBERS, "manifest.json"))
        manifest = json.loads(z.read("manifest.json"))
        graph = check_graph(parse_graph(z.read("graph.txt").decode()))
        for name in ("modules.json", "records.json", "explain.json"):
            json.loads(z.read(name))
        params = torch.load(io.BytesIO(z.read("params.pt")), weights_only=True)
    assert manifest["format"] == "purequant.model" and manifest["version"] == 1
    assert (manifest["torch"], manifest["purequant"]) == (torch.__version__, purequant.__version__)
    assert (manifest["backend"], manifest["reference"]) == ("x86", False)
    # Weights are stored quantized (int8, per channel), the float ones are not stored at all.
    weights = [t for p, t in params.items() if p.startswith("_quantized.")]
    assert len(weights) == 5 and all(t.dtype == torch.qint8 for t in weights)
    assert all(t.qscheme() == torch.per_channel_affine for t in weights)
    assert not any("weight" in p and not p.startswith("_quantized.") for p in params)
    assert {n.target for n in graph if n.op == "get_attr"} <= set(params)


def test_saved_weights_take_a_quarter_of_the_float_ones():
    q = quantized("resnet18", "static")
    model = ZOO["resnet18"].build()
    float_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = purequant.saving.artifact_of(q.meta["purequant"]).params
    saved_bytes = sum(t.numel() * t.element_size() for t in params.values())
    assert saved_bytes < 0.3 * float_bytes


@pytest.mark.parametrize("qscheme", ["per_tensor", "per_channel"])
def test_quantized_tensors_load_with_weights_only(qscheme):
    """What params.pt relies on: torch.load(weights_only=True) reads quantized tensors."""
    x = torch.randn(4, 3)
    if qscheme == "per_tensor":
        t = torch.quantize_per_tensor(x, 0.05, 3, torch.quint8)
    else:
        t = torch.quantize_per_channel(x, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64),
                                       torch.tensor([0, 1, -1, 2]), 0, torch.qint8)
    buf = io.BytesIO()
    torch.save({"w": t}, buf)
    back = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["w"]
    assert back.qscheme() == t.qscheme() and torch.equal(back.int_repr(), t.int_repr())
    assert torch.equal(back.dequantize(), t.dequantize())


def test_nothing_but_a_tensor_table_is_pickled(tmp_path, monkeypatch):
    q = quantized("mlp", "static")
    real_save, real_load = torch.save, torch.load
    saved, loaded = [], []

    def guarded_save(obj, f, *args, **kwargs):
        assert type(obj) is dict and all(type(v) in (torch.Tensor, nn.Parameter) for v in obj.values())
        saved.append(sorted(obj))
        return real_save(obj, f, *args, **kwargs)

    def guarded_load(f, *args, **kwargs):
        assert kwargs.get("weights_only") is True
        loaded.append(True)
        return real_load(f, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used outside torch.save of the tensor table")

    monkeypatch.setattr(torch, "save", guarded_save)
    monkeypatch.setattr(torch, "load", guarded_load)
    monkeypatch.setattr(pickle, "dumps", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch.fx.GraphModule, "__reduce__", refuse)
    monkeypatch.setattr(torch.fx.GraphModule, "__deepcopy__", refuse)
    back = purequant.load(purequant.save(q, tmp_path / "mlp.pq"))
    assert len(saved) == 1 and len(loaded) == 1
    batch = ZOO["mlp"].example_inputs(2)
    assert torch.equal(run(q, batch), run(back, batch))


def test_torch_ao_models_cannot_be_saved_but_ours_round_trip(tmp_path):
    """pytorch/pytorch#69426: torch.ao's quantized FX model cannot go through torch.save, and
    even where pickling works, torch.load(weights_only=True) refuses a whole module."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    entry = ZOO["digits"]
    observed = prepare_fx(copy.deepcopy(entry.build()), get_default_qconfig_mapping("x86"), entry.example_inputs())
    for batch in entry.calibration_batches(2):
        observed(*batch)
    theirs = convert_fx(observed)
    with pytest.raises(Exception):  # noqa: B017 - torch raises AttributeError here; any failure counts
        buf = io.BytesIO()
        torch.save(theirs, buf)
        torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    ours = quantized("digits", "static")
    back = purequant.load(purequant.save(ours, tmp_path / "digits.pq"))
    batch = entry.example_inputs(4)
    assert torch.equal(run(ours, batch), run(back, batch))


# ------------------------------------------------------------------ what save refuses
class Doubler(nn.Module):
    """A user module torch.fx keeps as a leaf: purequant cannot rebuild it from plain data."""

    def forward(self, x):
        return 2 * x


def test_an_opaque_user_module_is_named(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), Doubler()).eval()
    example = (torch.randn(2, 4),)
    prepared = purequant.prepare(model, None, example, custom_config={"leaf_modules": (Doubler,)})
    q = purequant.convert(purequant.calibrate(prepared, [example]))
    with pytest.raises(ArtifactError) as info:
        purequant.save(q, tmp_path / "m.pq")
    assert "module '1' is a test_saving.Doubler" in info.value.message
    assert "cannot rebuild" in info.value.message and info.value.hint
    assert not (tmp_path / "m.pq").exists()


def halve(x):
    return x / 2


torch.fx.wrap("halve")  # a call torch.fx keeps: the graph names test_saving.halve


class Halver(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return halve(self.fc(x))


def test_functions_from_other_packages_need_trust_on_both_sides(tmp_path):
    example = (torch.randn(2, 4),)
    q = purequant.convert(purequant.calibrate(purequant.prepare(Halver().eval(), None, example), [example]))
    assert any(n.target == "test_saving.halve" for n in q.meta["purequant"].graph)
    with pytest.raises(ArtifactError, match="names 'test_saving.halve', which is outside torch., operator."):
        purequant.save(q, tmp_path / "h.pq")
    path = purequant.save(q, tmp_path / "h.pq", trust=("test_saving.",))
    with pytest.raises(ArtifactError, match="names 'test_saving.halve'"):
        purequant.load(path)
    assert torch.equal(run(q, example), run(purequant.load(path, trust=("test_saving.",)), example))


def test_a_module_not_made_by_purequant_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="not made by purequant"):
        purequant.save(torch.fx.symbolic_trace(nn.Linear(2, 2)), tmp_path / "m.pq")


# ------------------------------------------------------------------ damaged and hostile files
def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _rewrite(path: Path, changes: dict[str, bytes], *, fix_digests: bool) -> Path:
    """A copy of the file with members replaced; with fix_digests, a manifest that agrees."""
    members = {**_members(path), **changes}
    if fix_digests:
        manifest = json.loads(members["manifest.json"])
        manifest["sha256"] = {n: hashlib.sha256(d).hexdigest() for n, d in members.items() if n != "manifest.json"}
        members["manifest.json"] = json.dumps(manifest).encode()
    out = path.with_name("tampered.pq")
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out


@pytest.fixture
def saved(tmp_path) -> Path:
    return purequant.save(quantized("digits", "static"), tmp_path / "digits.pq")


def test_a_changed_member_is_refused(saved):
    graph = _members(saved)["graph.txt"].replace(b"0, @torch.quint8", b"1, @torch.quint8", 1)
    with pytest.raises(ArtifactError) as info:
        purequant.load(_rewrite(saved, {"graph.txt": graph}, fix_digests=False))
    assert "graph.txt does not match its sha256 in manifest.json" in info.value.message


def test_not_a_model_file(tmp_path):
    (tmp_path / "x.pq").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="is not a purequant model file"):
        purequant.load(tmp_path / "x.pq")
    with pytest.raises(ArtifactError, match="no such file"):
        purequant.load(tmp_path / "missing.pq")


def test_a_newer_format_asks_for_an_upgrade(saved):
    manifest = json.loads(_members(saved)["manifest.json"])
    manifest["version"] = 99
    bad = _rewrite(saved, {"manifest.json": json.dumps(manifest).encode()}, fix_digests=False)
    with pytest.raises(ArtifactError) as info:
        purequant.load(bad)
    assert "format version 99" in info.value.message and info.value.hint == "upgrade purequant to load it"


CALLED: list = []


class Payload:
    def __reduce__(self):
        return (CALLED.append, ("ran",))


def test_params_holding_objects_are_refused_without_running_them(saved):
    buf = io.BytesIO()
    torch.save({"w": Payload()}, buf)
    bad = _rewrite(saved, {"params.pt": buf.getvalue()}, fix_digests=True)
    with pytest.raises(ArtifactError) as info:
        purequant.load(bad)
    assert "params.pt holds something other than tensors" in info.value.message
    assert CALLED == []


def test_graph_targets_outside_torch_are_refused(saved):
    graph = _members(saved)["graph.txt"].replace(b"torch.flatten(", b"os.system(")
    with pytest.raises(ArtifactError) as info:
        purequant.load(_rewrite(saved, {"graph.txt": graph}, fix_digests=True))
    assert "%flatten names 'os.system'" in info.value.message and "trust=" in info.value.hint


def test_module_types_outside_torch_nn_are_refused(saved):
    modules = _members(saved)["modules.json"].replace(b"torch.nn.MaxPool2d", b"evil.Module")
    with pytest.raises(ArtifactError, match="is a evil.Module, which purequant cannot rebuild"):
        purequant.load(_rewrite(saved, {"modules.json": modules}, fix_digests=True))


def test_members_holding_other_plain_data_are_refused(saved):
    bad = _rewrite(saved, {"modules.json": b'{"$map": {"features.2": {"$tuple": []}}}'}, fix_digests=True)
    with pytest.raises(ArtifactError, match="modules.json does not hold what purequant writes there"):
        purequant.load(bad)


def test_record_classes_outside_purequant_are_refused(saved):
    records = _members(saved)["records.json"].replace(
        b'"purequant.pipeline.runner.StageRecord"', b'"subprocess.Popen"', 1)
    with pytest.raises(ArtifactError, match="refusing to load 'subprocess.Popen'"):
        purequant.load(_rewrite(saved, {"records.json": records}, fix_digests=True))


# ------------------------------------------------------------------ explain and read
def test_explanations_travel_with_the_file(saved):
    text = explain(saved, "features_0_0")
    assert text.splitlines()[1] == "fuse: conv2d_bn2d_relu (root) -> purequant.nn.ConvReLU2d"
    assert "match: pattern 'conv2d_relu_fused'" in text
    assert text.splitlines()[-1].startswith("saved: %features_0_0 = call_function torch.ops.quantized.conv2d_relu(")
    folded_bn = explain(saved, "features_0_1")
    assert "fuse: conv2d_bn2d_relu (folded into %features_0_0)" in folded_bn
    packed = explain(saved, "features_0_0_packed")
    assert packed.startswith("made when lowering %features_0_0:\n")
    with pytest.raises(ArtifactError, match="no node %nope"):
        explain(saved, "nope")


def test_read_without_tensors_gives_the_graph(saved):
    artifact = read_artifact(saved, tensors=False)
    assert len(artifact.params) == 0
    assert print_graph(artifact.graph) == _members(saved)["graph.txt"].decode()
    assert artifact.versions["torch"] == torch.__version__


# ------------------------------------------------------------------ the user page
DOC = Path(__file__).parent.parent / "docs" / "saving.md"


def test_the_saving_page_runs(tmp_path, monkeypatch):
    """Every python block of docs/saving.md runs, in order, in one namespace."""
    import re

    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"^```python\n(.*?)^```\n", DOC.read_text(), re.S | re.M)
    namespace: dict = {"__name__": "docs_saving"}
    for i, body in enumerate(blocks):
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(body, f"{DOC.name} block {i}", "exec"), namespace)
    assert len(blocks) >= 3

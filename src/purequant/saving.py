"""Saving and loading quantized models without pickle: `save(module, path)`, `load(path)`.

    purequant.save(qmodel, "digits.pq")     # one zip file, no pickled code
    qmodel = purequant.load("digits.pq")     # a torch.fx.GraphModule, same outputs bit for bit

The file is a zip archive holding plain members only:

    manifest.json   format and version, purequant and torch versions, backend, reference flag,
                    and the sha256 of every other member (a changed member is refused)
    graph.txt       the lowered graph in the text format (`purequant.ir.print_graph`), with the
                    weights already quantized: quantize nodes whose inputs are all constants
                    became get_attr nodes of their quantized tensors (so the file holds int8
                    weights, not float ones); prepacking is left to `load`, because packed
                    weights are opaque engine objects
    params.pt       {path: tensor}, plain and quantized tensors, read back with
                    `torch.load(weights_only=True)` (which unpickles tensors, never objects)
    modules.json    ModuleSpecs of the float modules the graph still calls (pipeline codec)
    records.json    the StageRecords of prepare and convert (pipeline codec), timings left
                    out so that one model always saves to the same bytes
    explain.json    node id -> its decision log (`Prepared.explain`), so `purequant explain`
                    works without the original model

`load` re-runs `fold_weights` (and dead-code elimination) under the backend's quantized engine,
exactly as `convert` does, and emits the GraphModule with `lowered_module`. Float modules are
rebuilt from their ModuleSpecs; one that cannot be (an opaque user module, nn.LSTM) makes `save`
fail naming it, rather than write a file that cannot be loaded.

Loading never imports code named by the file outside torch.nn, purequant and the packages the
caller trusts: module types and graph targets are checked against those before anything is
resolved. Running the loaded model calls the torch/operator/math functions its graph names;
treat a model file from an unknown source as you would its graph printed as code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from attrs import frozen
from pyrsistent import PMap, PVector, pmap

from . import __version__
from .backends.engine import quantized_engine
from .backends.table import backend as backend_spec
from .convert_api import Quantized
from .errors import PurequantError, TraceError
from .ir import (
    Graph,
    ModuleSpec,
    Node,
    Ref,
    Sym,
    check_graph,
    format_node,
    parse_graph,
    paused_gc,
    print_graph,
)
from .ir.names import sanitize
from .lowering import lowered_module
from .lowering.materialise import resolve_op
from .pipeline.codec import CodecError, from_plain, to_plain
from .pipeline.runner import StageRecord, run
from .pipeline.stage import PipelineState, stage
from .stages.eliminate_dead_code import eliminate_dead_code
from .stages.fold_weights import fold_weights
from .trace import module_from_spec

__all__ = ["Artifact", "ArtifactError", "Loaded", "explain", "load", "read_artifact", "save"]

FORMAT, VERSION = "purequant.model", 1
MANIFEST, GRAPH, PARAMS = "manifest.json", "graph.txt", "params.pt"
MODULES, RECORDS, EXPLAIN = "modules.json", "records.json", "explain.json"
MEMBERS = (GRAPH, MODULES, RECORDS, EXPLAIN, PARAMS)
# Fixed zip timestamps: saving the same model twice gives the same bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)

# What graph targets and module types may name without `trust`. Builtins that evaluate or
# import code, or touch files, are never resolved.
SAFE_PREFIXES = ("torch.", "operator.", "math.", "builtins.", "purequant.")
MODULE_PREFIXES = ("torch.nn.", "purequant.")
_UNSAFE = frozenset({"eval", "exec", "compile", "open", "__import__", "breakpoint", "input",
                     "globals", "locals", "vars", "setattr", "delattr"})
_QUANTIZE = frozenset({
    "torch.quantize_per_tensor", "torch.quantize_per_channel",
    "torch.ops.quantized_decomposed.quantize_per_tensor",
    "torch.ops.quantized_decomposed.quantize_per_channel",
})


class ArtifactError(PurequantError):
    """A model cannot be saved, or a saved file is not a loadable purequant model."""


@frozen(eq=False)
class Artifact:
    """What a saved model file holds, as one value (`read_artifact` / `save` write and read it).

    Attributes:
        backend: the lowering backend; reference: whether the reference lowering was used.
        graph: the lowered graph with quantized weights as constants (before prepacking).
        params: path -> tensor for every get_attr and ModuleSpec of the graph (empty when
            read without tensors).
        modules: call_module target -> ModuleSpec.
        stage_records: prepare's and convert's StageRecords.
        explanations: node id -> decision log text.
        versions: `{"purequant": ..., "torch": ...}` that wrote the file (current ones in memory).
    """

    backend: str
    reference: bool
    graph: Graph
    params: PMap
    modules: PMap
    stage_records: tuple[StageRecord, ...]
    explanations: PMap
    versions: PMap = pmap({"purequant": __version__, "torch": torch.__version__})


@frozen(eq=False)
class Loaded:
    """`module.meta["purequant"]` of a loaded model: what the file held and what loading did.

    Like `Quantized`, it has `graph`, `params`, `modules`, `folded_graph`, `backend`, `reference`
    and `stage_records`, so a loaded model can be inspected and saved again the same way.

    Attributes:
        artifact: the file's content.
        folded_graph: the graph the module runs (prepacked weights as constants).
        load_records: StageRecords of the fold_weights and eliminate_dead_code run on load.
    """

    artifact: Artifact
    folded_graph: Graph
    load_records: tuple[StageRecord, ...]

    graph = property(lambda self: self.artifact.graph)
    params = property(lambda self: self.artifact.params)
    modules = property(lambda self: self.artifact.modules)
    backend = property(lambda self: self.artifact.backend)
    reference = property(lambda self: self.artifact.reference)
    stage_records = property(lambda self: self.artifact.stage_records)

    @property
    def records(self) -> dict[str, Any]:
        return {r.name: r.record for r in self.stage_records}


# ------------------------------------------------------------------ save
def save(module: torch.nn.Module, path: str | os.PathLike, *, trust: tuple[str, ...] = ()) -> Path:
    """Write a quantized model (from `convert`, `quantize*` or `load`) to one file at `path`.

    Reads `module.meta["purequant"]` only (never pickles the module). Quantizes the weights
    once (O(weights)), checks that every float module can be rebuilt from its ModuleSpec and
    that every target is one `load` will resolve, then writes the file atomically.

    Args:
        module: a GraphModule made by purequant.
        path: the file to write (conventionally `*.pq`); replaced if it exists.
        trust: package prefixes (`"mypkg."`) whose functions and module classes the graph may
            name besides torch, operator, math and purequant (pass the same to `load`).

    Returns:
        The path written.

    Raises:
        ArtifactError: not a purequant model, or a module or function that cannot be saved as
            plain data (the message names it).
    """
    record = getattr(module, "meta", {}).get("purequant")
    if isinstance(record, Loaded):
        artifact = record.artifact
    elif isinstance(record, Quantized):
        artifact = artifact_of(record)
    else:
        raise ArtifactError("this module was not made by purequant (no meta['purequant'] record)",
                            hint="save the result of purequant.convert, quantize, quantize_dynamic or load")
    _check_targets(artifact.graph, trust, callables=_callables(record))
    _check_modules(artifact.graph, artifact.modules, artifact.params, trust)
    path = Path(path)
    _write_zip(path, _members(artifact))
    return path


def artifact_of(record: Quantized) -> Artifact:
    """The Artifact of a `convert` result: weights quantized, only the params the graph uses.

    O(n + weights). The explanations cover every node of the traced and the observed graph.
    """
    with paused_gc():
        graph, params = quantize_weights(record.graph, record.params)
    modules = {n.target: record.modules[n.target] for n in graph.node_list()
               if n.op == "call_module" and n.target in record.modules}
    used = {n.target for n in graph.node_list() if n.op == "get_attr"}
    used |= {p for spec in modules.values() for p in spec.params.values() if p is not None}
    missing = sorted(p for p in used if p not in params)
    if missing:
        raise ArtifactError(f"the graph reads {missing[0]!r}, which is not in the model's params")
    prepared = record.prepared
    ids = dict.fromkeys([*prepared.traced.graph.ids(), *prepared.graph.ids()])
    explanations = pmap({nid: prepared.explain(nid) for nid in ids})
    return Artifact(record.backend, record.reference, graph, pmap({p: params[p] for p in sorted(used)}),
                    pmap(modules), tuple(record.stage_records), explanations)


def quantize_weights(graph: Graph, params: PMap) -> tuple[Graph, PMap]:
    """Evaluate quantize nodes whose inputs are all params get_attrs; they become get_attrs.

    Reads `graph` and `params` (neither modified). A quantized node keeps its id (readers are
    unchanged) and reads a new params entry `_quantized.<weight path>`; get_attr nodes only
    quantize nodes read disappear. The very same graph and params when nothing is constant.
    O(n) plus quantizing each weight once.
    """
    leaves = {n.id for n in graph.node_list() if n.op == "get_attr" and n.target in params}
    chosen = [n for n in graph.node_list() if n.op == "call_function" and n.target in _QUANTIZE
              and n.input_ids() and all(i in leaves for i in n.input_ids())]
    if not chosen:
        return graph, params
    new = params.evolver()
    replaced: dict[str, Node] = {}
    for node in chosen:
        source = graph.nodes[node.input_ids()[0]].target
        path = _fresh(new, f"_quantized.{sanitize(source)}")
        new[path] = _evaluate(graph, node, params)
        replaced[node.id] = Node(node.id, "get_attr", path, (), pmap(), node.meta.set("quantized_from", node.target))
    gone = {i for i in leaves if all(u in replaced for u in graph.users(i)) and graph.users(i)}
    b = graph.builder()
    for node in graph.node_list():
        if node.id not in gone:
            b.add(replaced.get(node.id, node))
    return b.finish(), new.persistent()


def _evaluate(graph: Graph, node: Node, params: Mapping) -> torch.Tensor:
    def arg(v: Any) -> Any:
        t = type(v)
        if t is tuple:
            return tuple(arg(x) for x in v)
        if isinstance(v, PVector):
            return [arg(x) for x in v]
        if t is Sym:
            return resolve_op(v.name)
        if t is Ref:
            return params[graph.nodes[v.id].target]
        return v

    try:
        return resolve_op(node.target)(*[arg(a) for a in node.args], **{k: arg(v) for k, v in node.kwargs.items()})
    except (RuntimeError, TypeError, ValueError) as e:
        raise ArtifactError(f"quantizing the weight of %{node.id} failed: {e}", node_id=node.id) from e


def _fresh(taken: Any, stem: str) -> str:
    path, k = stem, 0
    while path in taken:
        k += 1
        path = f"{stem}_{k}"
    return path


def _callables(record: Any) -> Mapping[str, Any]:
    prepared = getattr(record, "prepared", None)
    return prepared.traced.callables if prepared is not None else {}


def _members(artifact: Artifact) -> dict[str, bytes]:
    """File name -> bytes, the manifest included. O(size of the model)."""
    buf = io.BytesIO()
    # In path order: a pmap iterates in hash order, which changes from process to process.
    torch.save({p: artifact.params[p] for p in sorted(artifact.params)}, buf)
    try:
        members = {
            GRAPH: print_graph(artifact.graph).encode(),
            MODULES: _json(to_plain(artifact.modules)),
            RECORDS: _json(to_plain(tuple(attrs.evolve(r, seconds=0.0) for r in artifact.stage_records))),
            EXPLAIN: _json(to_plain(artifact.explanations)),
            PARAMS: buf.getvalue(),
        }
    except CodecError as e:
        raise ArtifactError(f"cannot save the model's records as plain data: {e.message}", hint=e.hint) from None
    manifest = {
        "format": FORMAT, "version": VERSION, "purequant": __version__, "torch": torch.__version__,
        "backend": artifact.backend, "reference": artifact.reference,
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }
    return {MANIFEST: _json(manifest), **members}


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as z:
            for name, data in members.items():
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                # Tensors hardly compress; text and JSON shrink several times.
                info.compress_type = zipfile.ZIP_STORED if name == PARAMS else zipfile.ZIP_DEFLATED
                z.writestr(info, data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ------------------------------------------------------------------ checks (save and load)
def _check_targets(graph: Graph, trust: tuple[str, ...], callables: Mapping[str, Any] = pmap()) -> None:
    """Every call_function target and Sym names a function `load` will resolve."""
    allowed = SAFE_PREFIXES + tuple(trust)
    for node in graph.node_list():
        names = [node.target] if node.op == "call_function" else []
        names += _syms(node.args) + _syms(tuple(node.kwargs.values()))
        for name in names:
            if name in callables:
                raise ArtifactError(
                    f"%{node.id} calls {name}, a function with no importable name (a lambda or a "
                    "function defined inside another)", node_id=node.id,
                    hint="define it at module level so it can be named, or keep it out of the model")
            if not _allowed(name, allowed):
                raise ArtifactError(
                    f"%{node.id} names {name!r}, which is outside {', '.join(allowed)}", node_id=node.id,
                    hint="pass trust=('yourpkg.',) to save and load if you trust that package")


def _allowed(name: str, allowed: tuple[str, ...]) -> bool:
    short = name.removeprefix("builtins.")
    if short in _UNSAFE:
        return False
    return name.startswith(allowed) or ("." not in name and name.isidentifier())


def _syms(values: tuple) -> list[str]:
    out = []
    for v in values:
        if type(v) is Sym:
            out.append(v.name)
        elif type(v) is tuple or isinstance(v, PVector):
            out += _syms(tuple(v))
        elif isinstance(v, PMap):
            out += _syms(tuple(v.values()))
    return out


def _check_modules(graph: Graph, modules: PMap, params: PMap, trust: tuple[str, ...]) -> None:
    """Every called module has a spec of an allowed type that builds from plain data."""
    allowed = MODULE_PREFIXES + tuple(trust)
    for node in graph.node_list():
        if node.op != "call_module":
            continue
        spec = modules.get(node.target)
        if spec is None:
            raise ArtifactError(f"%{node.id} calls module {node.target!r}, which has no ModuleSpec",
                                node_id=node.id)
        if not spec.type.startswith(allowed):
            raise ArtifactError(
                f"module {node.target!r} is a {spec.type}, which purequant cannot rebuild from plain "
                "data (only torch.nn and purequant modules)", node_id=node.id,
                hint="let torch.fx trace into it (leave it out of leaf_modules), or pass "
                "trust=('yourpkg.',) if its constructor takes its hyperparameters by name")
        try:
            with torch.device("meta"):  # a trial build only; tensors come from params
                module_from_spec(spec, params)
        except TraceError as e:
            raise ArtifactError(
                f"module {node.target!r} ({spec.type}) cannot be rebuilt from its ModuleSpec: "
                f"{e.message}", node_id=node.id,
                hint="quantize it, or keep it out of the model you save") from None


# ------------------------------------------------------------------ load
def load(path: str | os.PathLike, *, trust: tuple[str, ...] = ()) -> torch.fx.GraphModule:
    """Read a file written by `save` and return a runnable quantized GraphModule.

    Reads the file (checking every member's sha256 against the manifest), the tensors with
    `torch.load(weights_only=True)`, and the specs and records through the pipeline codec.
    Prepacks the weights with `fold_weights` under the backend's quantized engine, as `convert`
    does, and emits with `lowered_module`. O(model size) plus prepacking.

    Args:
        path: the file.
        trust: package prefixes the graph's functions and module types may come from besides
            torch, operator, math and purequant.

    Returns:
        The GraphModule; `module.meta["purequant"]` is a `Loaded` record. Run it under the
        backend's engine (`purequant.backends.quantized_engine`) like a `convert` result.

    Raises:
        ArtifactError: not a purequant model file, a member changed after saving, a newer
            format, a tensor file holding more than tensors, or a name outside what is trusted.
    """
    artifact = read_artifact(path, trust=trust)
    engine = None if artifact.reference else backend_spec(artifact.backend).engine
    stages = (stage(fold_weights, uses_params=True), stage(eliminate_dead_code, uses_modules=True))
    with paused_gc(), quantized_engine(engine):
        folded, records = run(stages, PipelineState(artifact.graph, artifact.params, artifact.modules))
    gm = lowered_module(folded.graph, folded.params, folded.modules)
    gm.meta["purequant"] = Loaded(artifact, folded.graph, records)
    return gm


def read_artifact(path: str | os.PathLike, *, trust: tuple[str, ...] = (), tensors: bool = True) -> Artifact:
    """The checked content of a saved model file; `tensors=False` skips reading params.pt.

    O(file size). Raises ArtifactError as `load` does.
    """
    path = Path(path)
    members, manifest = _read_zip(path)
    where = f"{path}: "
    try:
        graph = check_graph(parse_graph(members[GRAPH].decode()))
        modules = from_plain(json.loads(members[MODULES]))
        records = from_plain(json.loads(members[RECORDS]))
        explanations = from_plain(json.loads(members[EXPLAIN]))
    except (PurequantError, ValueError) as e:
        raise ArtifactError(where + _first_line(e), hint="the file is damaged; save the model again") from None
    _expect(isinstance(modules, PMap) and all(isinstance(v, ModuleSpec) for v in modules.values()), where, MODULES)
    _expect(type(records) is tuple and all(isinstance(r, StageRecord) for r in records), where, RECORDS)
    _expect(isinstance(explanations, PMap) and all(type(v) is str for v in explanations.values()), where, EXPLAIN)
    params = _read_params(members[PARAMS], where) if tensors else pmap()
    _check_targets(graph, trust)
    if tensors:
        _check_modules(graph, modules, params, trust)
    versions = pmap({"purequant": manifest.get("purequant"), "torch": manifest.get("torch")})
    return Artifact(manifest["backend"], bool(manifest["reference"]), graph, params, modules, records,
                    explanations, versions)


def _expect(ok: bool, where: str, member: str) -> None:
    if not ok:
        raise ArtifactError(f"{where}{member} does not hold what purequant writes there",
                            hint="the file is damaged; save the model again")


def _read_zip(path: Path) -> tuple[dict[str, bytes], dict]:
    """Members by name and the manifest, every digest checked."""
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path} is not a purequant model file (not a zip archive)",
                            hint="purequant.load reads files written by purequant.save")
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        if MANIFEST not in names:
            raise ArtifactError(f"{path} is not a purequant model file (no {MANIFEST})",
                                hint="purequant.load reads files written by purequant.save")
        manifest = _manifest(path, _read_member(path, z, MANIFEST))
        expected = set(manifest["sha256"]) | {MANIFEST}
        if names != expected or set(MEMBERS) - names:
            odd = sorted(names ^ (expected | set(MEMBERS)))
            raise ArtifactError(f"{path}: unexpected or missing members {odd}",
                                hint="the file was changed after saving; save the model again")
        members = {name: _read_member(path, z, name) for name in MEMBERS}
    for name, data in members.items():
        if hashlib.sha256(data).hexdigest() != manifest["sha256"][name]:
            raise ArtifactError(f"{path}: {name} does not match its sha256 in {MANIFEST} "
                                "(the file was changed after saving)",
                                hint="save the model again from its source")
    return members, manifest


def _read_member(path: Path, z: zipfile.ZipFile, name: str) -> bytes:
    try:
        return z.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # zip's own CRC check, or bad deflate data
        raise ArtifactError(f"{path}: {name} is damaged ({e})", hint="save the model again from its source") from None


def _manifest(path: Path, data: bytes) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError:
        raise ArtifactError(f"{path}: {MANIFEST} is not JSON", hint="the file is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a purequant model file (format is not {FORMAT!r})")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > VERSION:
        raise ArtifactError(
            f"{path} was written in format version {manifest.get('version')} by purequant "
            f"{manifest.get('purequant')}; this purequant {__version__} reads up to version {VERSION}",
            hint="upgrade purequant to load it")
    if not isinstance(manifest.get("sha256"), dict) or "backend" not in manifest or "reference" not in manifest:
        raise ArtifactError(f"{path}: {MANIFEST} lacks sha256, backend or reference")
    return manifest


def _read_params(data: bytes, where: str) -> PMap:
    try:
        with warnings.catch_warnings():
            # torch.load of quantized tensors goes through TypedStorage and says so each time.
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            table = torch.load(io.BytesIO(data), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise ArtifactError(
            f"{where}{PARAMS} holds something other than tensors; torch.load(weights_only=True) "
            f"refused it: {_first_line(e)}", hint="never load it with weights_only=False") from None
    if type(table) is not dict or not all(type(k) is str and isinstance(v, torch.Tensor) for k, v in table.items()):
        raise ArtifactError(f"{where}{PARAMS} is not a {{path: tensor}} table")
    return pmap(table)


def _first_line(e: BaseException) -> str:
    text = e.message if isinstance(e, PurequantError) else str(e)
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


# ------------------------------------------------------------------ explain
def explain(source: str | os.PathLike | Artifact, nid: str) -> str:
    """The decision log of node `nid` stored in a saved model (no model or tensors needed).

    A node the lowering made (`%conv1_packed`) is explained through the node it was lowered
    from. The node's line in the saved graph ends the text. O(file size) for a path.

    Raises:
        ArtifactError: no node `nid` in the file (the hint says where ids are listed).
    """
    artifact = source if isinstance(source, Artifact) else read_artifact(source, tensors=False)
    node = artifact.graph.get(nid)
    text = artifact.explanations.get(nid)
    if text is None and node is not None:
        origin = node.meta.get("lowered_from")
        if origin in artifact.explanations:
            text = f"made when lowering %{origin}:\n" + artifact.explanations[origin]
    if text is None:
        raise ArtifactError(f"no node %{nid} in this model",
                            hint="node ids are printed by `purequant show MODEL.pq`")
    if node is not None:
        text += "\nsaved: " + format_node(node, meta=False)
    return text

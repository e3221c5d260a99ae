"""Dumps: every stage's inputs and outputs on disk, enough to re-run it alone (see replay.py).

Layout of a dump root (one folder per stage, tensors shared and content-addressed):

    000_eliminate_dead_code/
        spec.json          fn qualified name, reads, flags, options, phase, stages run before
        input.graph        the input graph in the text format
        records_in.json    the records it read, {name: plain data}
        params_in.json     {param path: sha256 content digest}
        modules_in.json    {call_module target: plain ModuleSpec}
        output.graph       the output graph (absent if the stage failed)
        record.json        the record it returned
        params_out.json, modules_out.json
    tensors/<digest>.pt    each distinct tensor once, loadable with torch.load(weights_only=True)

Inputs are written before the stage runs, outputs after, so a stage that fails leaves a folder
that reproduces the failure.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from attrs import field, frozen
from pyrsistent import PMap, pmap

from ..errors import PurequantError
from ..ir import parse_graph, print_graph
from .codec import from_plain, load_qualified, to_plain
from .instruments import Instrument, StageContext
from .stage import PipelineState, StageSpec
from .tensors import load_tensor, save_tensor, tensor_digest

FORMAT = 1
SPEC, INPUT, OUTPUT, RECORD = "spec.json", "input.graph", "output.graph", "record.json"
RECORDS_IN, PARAMS_IN, PARAMS_OUT = "records_in.json", "params_in.json", "params_out.json"
MODULES_IN, MODULES_OUT, TENSORS = "modules_in.json", "modules_out.json", "tensors"


class DumpError(PurequantError):
    """A dump folder is missing, incomplete or damaged."""


def stage_dir_name(ctx: StageContext) -> str:
    return f"{ctx.index:03d}_{ctx.spec.name}"


@frozen
class Dump(Instrument):
    """Write each stage's inputs (before) and outputs (after) under `root`.

    Attributes:
        root: the dump folder (created if needed); a stage folder already there is replaced.
    """

    root: Path = field(converter=Path)
    # id(tensor) -> (tensor, digest): each distinct tensor is hashed once per Dump. The tensor is
    # held so its id cannot be reused by another object while the cache lives.
    _digests: dict = field(factory=dict, init=False, eq=False, repr=False)

    def before(self, ctx: StageContext, state: PipelineState) -> None:
        folder = _fresh(self.root / stage_dir_name(ctx))
        _write_json(folder / SPEC, spec_to_plain(ctx))
        (folder / INPUT).write_text(print_graph(state.graph))
        reads = {n: to_plain(state.records[n]) for n in ctx.spec.reads if n in state.records}
        _write_json(folder / RECORDS_IN, reads)
        _write_json(folder / PARAMS_IN, self._store(state.params))
        _write_json(folder / MODULES_IN, _plain_map(state.modules))

    def after(self, ctx, state, out, record) -> None:
        folder = self.root / stage_dir_name(ctx)
        _write_json(folder / RECORD, to_plain(record.record))
        _write_json(folder / PARAMS_OUT, self._store(out.params))
        _write_json(folder / MODULES_OUT, _plain_map(out.modules))
        (folder / OUTPUT).write_text(print_graph(out.graph))  # last: marks the folder complete

    def _store(self, params: PMap) -> dict[str, str]:
        out = {}
        for path, t in sorted(params.items()):
            hit = self._digests.get(id(t))
            if hit is None or hit[0] is not t:
                hit = self._digests[id(t)] = (t, tensor_digest(t))
                save_tensor(self.root / TENSORS, t, hit[1])
            out[path] = hit[1]
        return out


def _fresh(folder: Path) -> Path:
    if folder.exists():
        if not (folder / SPEC).exists():
            raise DumpError(f"{folder} exists and is not a stage dump; refusing to replace it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _plain_map(table: PMap) -> dict[str, Any]:
    return {k: to_plain(v) for k, v in table.items()}


def spec_to_plain(ctx: StageContext) -> dict[str, Any]:
    """spec.json: the stage spec by name, plus where it ran."""
    spec = ctx.spec
    return {
        "format": FORMAT, "index": ctx.index, "name": spec.name, "fn": spec.fn_name,
        "reads": list(spec.reads), "uses_params": spec.uses_params,
        "uses_modules": spec.uses_modules, "options": to_plain(spec.options),
        "phase": ctx.phase, "done": list(ctx.done),
    }


# ------------------------------------------------------------------- loading
@frozen
class DumpedStage:
    """One stage folder read back.

    Attributes:
        ctx: the stage context it ran in (spec with its function imported).
        state: its input state (graph, params, modules, the records it read).
        output: the dumped output graph text, or None if the stage failed when dumped.
        record: the dumped record as plain data (None if absent).
        params_in: {path: digest} of its input params (verified on load).
        params_out: {path: digest} of its output params.
        modules_out: {target: plain ModuleSpec} of its output modules.
    """

    ctx: StageContext
    state: PipelineState
    output: str | None
    record: Any
    params_in: dict
    params_out: dict
    modules_out: dict


def load_stage(folder: Path | str, *, trust: tuple[str, ...] = ()) -> DumpedStage:
    """Read a stage folder written by `Dump`.

    The stage function and record classes are imported from purequant and the prefixes in
    `trust` only.

    Raises:
        DumpError: not a stage folder, or a file in it is missing.
        CodecError: the function or a record class is outside purequant and `trust`.
    """
    folder = Path(folder)
    if not (folder / SPEC).is_file():
        raise DumpError(f"{folder} is not a stage dump folder (no {SPEC})",
                        hint="pass a folder such as dump/000_eliminate_dead_code")
    raw = json.loads((folder / SPEC).read_text())
    ctx = StageContext(_spec_from_plain(raw, trust), raw["index"], tuple(raw["done"]), raw["phase"])
    params_in = _read_json(folder / PARAMS_IN, {})
    state = _input_state(folder, params_in, trust)
    out = folder / OUTPUT
    return DumpedStage(
        ctx, state, out.read_text() if out.exists() else None,
        _read_json(folder / RECORD, None) if out.exists() else None,
        params_in, _read_json(folder / PARAMS_OUT, {}), _read_json(folder / MODULES_OUT, {}),
    )


def _spec_from_plain(raw: dict, trust: tuple[str, ...]) -> StageSpec:
    fn = load_qualified(raw["fn"], trust=trust)
    options = from_plain(raw["options"], trust=trust)
    return StageSpec(raw["name"], fn, tuple(raw["reads"]), raw["uses_params"],
                     raw["uses_modules"], options, raw["phase"])


def _input_state(folder: Path, params_in: dict, trust: tuple[str, ...]) -> PipelineState:
    graph = parse_graph(_read(folder / INPUT))
    records = {k: from_plain(v, trust=trust) for k, v in _read_json(folder / RECORDS_IN, {}).items()}
    modules = {k: from_plain(v, trust=trust) for k, v in _read_json(folder / MODULES_IN, {}).items()}
    return PipelineState(graph, load_params(folder, params_in), pmap(modules), pmap(records))


def load_params(folder: Path, digests: dict[str, str]) -> PMap:
    """{path: digest} -> {path: tensor} from the dump's tensor store (one load per digest)."""
    store = folder.parent / TENSORS
    loaded: dict[str, torch.Tensor] = {}
    for d in set(digests.values()):
        loaded[d] = load_tensor(store, d)
    return pmap({path: loaded[d] for path, d in digests.items()})


def _read(path: Path) -> str:
    if not path.is_file():
        raise DumpError(f"{path} is missing from the dump")
    return path.read_text()


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default

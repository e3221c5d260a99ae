"""`convert`, `quantize` and `quantize_dynamic`: from a calibrated Prepared to a quantized model.

    q = purequant.convert(prepared)                        # native int8 kernels
    r = purequant.convert(prepared, reference=True)        # quantize/dequantize around float ops
    s = purequant.convert(prepared, qconfig={"": qc, "module_name": [("fc", None)]})  # skip fc

`convert` can be called many times on one calibrated Prepared (other qconfigs, backends,
reference or native) without calibrating again: a convert-time qconfig re-runs the pure prepare
stages and reuses the statistics of every observer it finds again (same value, same spec).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import torch
from attrs import frozen
from pyrsistent import PMap, pmap

from .api import Prepared, calibrate, prepare, unchanged_objects
from .backends.engine import quantized_engine
from .backends.table import backend as backend_spec
from .errors import ConfigError, StageError
from .ir import Graph, paused_gc
from .lowering import lowered_module
from .observers import QParams, qparams
from .observers.trivial import NO_STATS
from .pipeline.runner import StageRecord, run
from .pipeline.stage import PipelineState, stage
from .prepare_stages import prepare_stages
from .qconfig import to_qconfig_spec
from .stages.eliminate_dead_code import eliminate_dead_code
from .stages.fold_weights import fold_weights
from .stages.lower import lower

NO_STATS_KINDS = frozenset({"placeholder", "noop", "fixed"})


@frozen(eq=False)
class Quantized:
    """What `convert` made, kept on the result as `module.meta["purequant"]` for inspection.

    Attributes:
        prepared: the Prepared value it came from (unchanged).
        graph: the lowered graph before weight folding (plain data; what `save` writes).
        params: params of that graph (tensors only: quantized weights, scales).
        modules: ModuleSpecs of call_module nodes left float.
        folded_graph: the graph the module runs (prepacked weights as constants).
        backend: backend name; reference: whether the reference lowering was used.
        stage_records: prepare's stage records followed by convert's.
    """

    prepared: Prepared
    graph: Graph
    params: PMap
    modules: PMap
    folded_graph: Graph
    backend: str
    reference: bool
    stage_records: tuple[StageRecord, ...]

    @property
    def records(self) -> dict[str, Any]:
        return {r.name: r.record for r in self.stage_records}


def convert(
    prepared: Prepared,
    *,
    backend: str | None = None,
    reference: bool = False,
    qconfig: Any = None,
    dump_dir: str | None = None,
) -> torch.fx.GraphModule:
    """Lower a calibrated Prepared to a quantized GraphModule.

    Args:
        prepared: from `prepare` then `calibrate` (or `with_stats`). Not modified.
        backend: lowering backend; defaults to the one `prepare` used.
        reference: quantize/dequantize around float ops instead of native int8 kernels.
        qconfig: a convert-time qconfig (any accepted form); it may switch nodes off or change
            anything that needs no statistics beyond those gathered.
        dump_dir: if given, every convert stage is dumped there.

    Returns:
        A torch.fx.GraphModule; `module.meta["purequant"]` is the `Quantized` record.

    Raises:
        StageError: calibration never ran, or the convert-time qconfig needs statistics that
            were never gathered (the message names the node and what to do).
    """
    name = backend or prepared.backend
    engine = None if reference else backend_spec(name).engine
    state, prep_records = _observed_state(prepared, qconfig)
    state = attrs.evolve(state, records=state.records.set("qparams", _activation_qparams(prepared, state)))
    lower_spec = stage(
        lower, uses_params=True, uses_modules=True, reads=("find_matches", "insert_observers", "qparams"),
        target="reference" if reference else "native", backend=name, phase="LOWERED",
    )
    tail = (stage(fold_weights, uses_params=True), stage(eliminate_dead_code, uses_modules=True))
    with paused_gc():
        # Numbered after prepare's stages: one dump folder reads as one pipeline, 000 to 007.
        first = len(prep_records)
        lowered, recs = run((lower_spec,), state, instruments=_instruments(dump_dir), start=first)
        # Lowering is engine-free; packing belongs to the engine that will run the kernels.
        with quantized_engine(engine):
            folded, more = run(tail, lowered, instruments=_instruments(dump_dir), start=first + len(recs))
    gm = lowered_module(
        folded.graph, folded.params, folded.modules,
        module_objects=unchanged_objects(prepared.traced, folded.modules), callables=prepared.traced.callables,
    )
    gm.meta["purequant"] = Quantized(
        prepared, lowered.graph, lowered.params, lowered.modules, folded.graph, name, reference,
        prep_records + recs + more,
    )
    return gm


def quantize(
    model: torch.nn.Module,
    example_inputs: Any,
    calibration_batches: Iterable[Any],
    qconfig: Any = None,
    *,
    backend: str = "x86",
    reference: bool = False,
) -> torch.fx.GraphModule:
    """prepare + calibrate + convert in one call (static quantization)."""
    prepared = calibrate(prepare(model, qconfig, example_inputs, backend=backend), calibration_batches)
    return convert(prepared, reference=reference)


def quantize_dynamic(
    model: torch.nn.Module,
    example_inputs: Any,
    qconfig: Any = None,
    *,
    dtype: torch.dtype = torch.qint8,
    backend: str = "x86",
) -> torch.fx.GraphModule:
    """Dynamic quantization (weights ahead of time, activations at run time): no calibration.

    `dtype=torch.qint8` gives int8 dynamic linear/LSTM/GRU; `torch.float16` gives fp16 weights.
    """
    from .qconfig import cpu_aware_dynamic_default, float16_qconfig_spec

    if qconfig is None:
        if dtype == torch.float16:
            qconfig = float16_qconfig_spec()
        elif dtype == torch.qint8:
            qconfig = cpu_aware_dynamic_default()
        else:
            raise ConfigError(f"quantize_dynamic supports torch.qint8 and torch.float16, not {dtype}")
    prepared = prepare(model, qconfig, example_inputs, backend=backend)
    return convert(prepared)


def quantized_record(module: torch.fx.GraphModule) -> Quantized:
    """The `Quantized` record of a module `convert` made."""
    record = getattr(module, "meta", {}).get("purequant")
    if record is None:
        raise ConfigError("this module was not made by purequant.convert")
    return record


# ---------------------------------------------------------------------------------- helpers
def _observed_state(prepared: Prepared, qconfig: Any) -> tuple[PipelineState, tuple[StageRecord, ...]]:
    """The observed state to lower: prepare's own, or prepare's stages re-run with `qconfig`."""
    if qconfig is None:
        return prepared.state, prepared.stage_records
    spec = to_qconfig_spec(qconfig)
    traced = prepared.traced
    stages = prepare_stages(spec, prepared.backend, _custom_types(prepared))
    with paused_gc():
        state, records = run(stages, PipelineState(traced.graph, traced.params, traced.modules))
    return state, records


def _custom_types(prepared: Prepared) -> tuple[str, ...]:
    for r in prepared.stage_records:
        if r.name == "find_matches":
            return tuple(r.options.get("custom_modules", ()))
    return ()


def _activation_qparams(prepared: Prepared, state: PipelineState) -> PMap:
    """observer id (in `state`) -> QParams, from the statistics `prepared` gathered."""
    stats = prepared.stats
    by_value = {(s.value_id, s.spec): oid for oid, s in prepared.records["insert_observers"].slots.items()}
    out: dict[str, QParams] = {}
    slots = state.records["insert_observers"].slots
    # Graph order, not the map's hash order: which node an error names must not depend on
    # PYTHONHASHSEED.
    for oid in sorted(slots, key=state.graph.position):
        slot = slots[oid]
        if slot.is_weight or slot.spec.kind in NO_STATS_KINDS:
            if slot.spec.kind == "fixed":
                out[oid] = qparams(slot.spec, NO_STATS)
            continue
        source = oid if (slot.value_id, slot.spec) == _slot_key(prepared, oid) else by_value.get((slot.value_id, slot.spec))
        if source is None:
            raise StageError(
                f"the convert-time qconfig observes %{slot.value_id} with {slot.spec.kind} "
                f"{slot.spec.dtype}, but calibration never gathered those statistics",
                stage="convert", node_id=slot.value_id,
                hint="calibrate with a prepare-time qconfig that covers this node, or keep its prepare-time qconfig",
            )
        if stats.batches == 0:
            raise StageError(
                "convert before calibration: no batch went through the observers",
                stage="convert", node_id=slot.value_id,
                hint="run purequant.calibrate(prepared, batches) first (or use quantize_dynamic for dynamic quantization)",
            )
        out[oid] = qparams(slot.spec, stats.stats[source], f"observer %{source} of %{slot.value_id}")
    return pmap(out)


def _slot_key(prepared: Prepared, oid: str) -> tuple | None:
    slot = prepared.records["insert_observers"].slots.get(oid)
    return None if slot is None else (slot.value_id, slot.spec)


def _instruments(dump_dir: str | None):
    from .pipeline.instruments import DEFAULT_INSTRUMENTS

    if dump_dir is None:
        return DEFAULT_INSTRUMENTS
    from .pipeline.dump import Dump

    return (*DEFAULT_INSTRUMENTS, Dump(dump_dir))

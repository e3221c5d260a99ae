"""The user-facing entry points, composed from the pure stages.

    prepared = purequant.prepare(model, qconfig, example_inputs)     # trace + prepare stages
    prepared = purequant.calibrate(prepared, batches)                 # a new value
    stats = purequant.observe_batch(prepared, batch)                  # for sharded calibration
    prepared = prepared.with_stats(purequant.merge_stats(s1, s2))
    print(prepared.explain("conv1"))

Nothing the user passes in is mutated, and a `Prepared` value never changes: calibration returns
a new one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import torch
from attrs import field, frozen
from pyrsistent import PMap

from .calibration import (
    OBSERVE,
    CalibrationStats,
    ObserverHook,
    empty_stats,
    hooked_observe,
    keyed_observers,
    merge_stats,
    run_observed,
)
from .errors import ConfigError
from .explain import explain_node
from .ir import Graph, paused_gc
from .pipeline.runner import StageRecord, run
from .pipeline.stage import PipelineState
from .prepare_stages import prepare_stages
from .qconfig import QConfigSpec, cpu_aware_default, object_type_key, to_qconfig_spec
from .trace import Traced, emit_graph_module, trace

__all__ = ["Prepared", "calibrate", "merge_stats", "observe_batch", "prepare"]

BACKENDS = ("x86", "fbgemm", "qnnpack", "onednn")


@frozen(eq=False)
class Prepared:
    """A prepared (observed) model as one immutable value.

    Attributes:
        traced: what tracing the user's model gave (graph and tables; the user's tensors).
        qconfig: the resolved qconfig spec.
        backend: the backend the pattern table and defaults came from.
        state: the observed graph, params, module specs and every stage's record by name.
        stage_records: one StageRecord per prepare stage, in order.
        stats: calibration statistics (empty until `calibrate`).
    """

    traced: Traced
    qconfig: QConfigSpec
    backend: str
    state: PipelineState
    stage_records: tuple[StageRecord, ...]
    stats: CalibrationStats
    # Derived from `state` only (which calibrate and with_stats keep), so values evolved from
    # one another share it: the observed module is emitted once, not per calibration call.
    _memo: dict = field(factory=dict, eq=False, repr=False)

    @property
    def graph(self) -> Graph:
        """The observed graph."""
        return self.state.graph

    @property
    def records(self) -> PMap:
        return self.state.records

    @property
    def observer_specs(self) -> PMap:
        return self.stats.specs

    def with_stats(self, stats: CalibrationStats) -> Prepared:
        """A new Prepared holding `stats` (from `merge_stats` of sharded runs)."""
        if stats.specs != self.stats.specs:
            raise ConfigError(
                "these statistics belong to a different observed graph", stage="calibrate"
            )
        return attrs.evolve(self, stats=stats)

    def explain(self, node: str) -> str:
        """Why `node` was or was not quantized: qconfig decision, match, observers."""
        return explain_node(self, node)

    def observed_module(self, collector: Any = None) -> torch.fx.GraphModule:
        """The observed graph as a GraphModule (observers are identity without a collector)."""
        insertion = self.records.get("insert_observers")
        graph = keyed_observers(self.graph, insertion.shares if insertion is not None else None)
        observe = collector if collector is not None else _identity_observer
        return emit_graph_module(
            graph,
            params=self.state.params,
            module_objects=unchanged_objects(self.traced, self.state.modules),
            modules=self.state.modules,
            callables={OBSERVE: observe, **self.traced.callables},
            class_name="ObservedModule",
        )

    def calibration_module(self) -> tuple[torch.fx.GraphModule, ObserverHook]:
        """The observed module calibration runs, emitted once and shared, with its hook."""
        found = self._memo.get("calibration")
        if found is None:
            hook = ObserverHook()
            found = self._memo["calibration"] = (self.observed_module(hooked_observe(hook)), hook)
        return found


def _identity_observer(value: Any, key: str) -> Any:
    return value


def unchanged_objects(traced: Traced, modules: PMap) -> dict[str, torch.nn.Module]:
    """The user's module objects whose spec no stage changed (others are built from specs)."""
    return {
        p: m for p, m in traced.module_objects.items() if modules.get(p) == traced.modules.get(p)
    }


def prepare(
    model: torch.nn.Module,
    qconfig: Any = None,
    example_inputs: Any = None,
    *,
    backend: str = "x86",
    custom_config: dict[str, Any] | None = None,
    dump_dir: str | None = None,
) -> Prepared:
    """Trace `model` and run the prepare stages: fuse, qconfig map, matching, observers.

    Args:
        model: the float model (never mutated, never deep-copied).
        qconfig: any accepted qconfig form (see docs/qconfig.md); None means the CPU-aware
            default of `backend`.
        example_inputs: a tuple of example inputs (checked against the forward signature).
        backend: "x86", "fbgemm", "qnnpack" or "onednn".
        custom_config: `leaf_modules` (classes or paths torch.fx must not trace into),
            `concrete_args`, `custom_module_types` (classes matched as their own op).
        dump_dir: if given, every stage's input, output and record is written there.

    Returns:
        A Prepared value (observed graph, records, empty statistics).
    """
    if backend not in BACKENDS:
        raise ConfigError(
            f"unknown backend {backend!r}", hint=f"choose one of {', '.join(BACKENDS)}"
        )
    _check_custom(custom_config if custom_config is not None else {})
    custom = dict(custom_config or {})
    _check_eval(model)
    spec = cpu_aware_default(backend).spec if qconfig is None else to_qconfig_spec(qconfig)
    _check_one_device(model)
    traced = trace(
        model,
        example_inputs,
        leaf_modules=custom.get("leaf_modules", ()),
        concrete_args=custom.get("concrete_args"),
    )
    custom_types = tuple(object_type_key(t) for t in custom.get("custom_module_types", ()))
    stages = prepare_stages(spec, backend, custom_types)
    state = PipelineState(traced.graph, traced.params, traced.modules)
    with paused_gc():
        state, records = run(stages, state, instruments=_instruments(dump_dir))
    return Prepared(traced, spec, backend, state, records, empty_stats(_observer_specs(state)))


def calibrate(prepared: Prepared, batches: Iterable[Any], *, progress: bool = False) -> Prepared:
    """Run `batches` through the observed model; return a new Prepared with merged statistics.

    Observation continues from `prepared.stats` in order (moving averages depend on it).
    The old value and the user's model are unchanged. O(batches * forward).
    """
    bar = _progress_bar() if progress else None
    module, hook = prepared.calibration_module()
    stats = run_observed(module, hook, prepared.stats, batches, _where(prepared), bar)
    if bar is not None:
        bar(None)
    return attrs.evolve(prepared, stats=stats)


def observe_batch(prepared: Prepared, batch: Any) -> CalibrationStats:
    """Statistics of one batch alone, for callers who shard calibration themselves."""
    start = empty_stats(prepared.stats.specs)
    module, hook = prepared.calibration_module()
    return run_observed(module, hook, start, [batch], _where(prepared))


def _where(prepared: Prepared) -> dict[str, str]:
    """observer id -> 'node %x (file.py:12)' for error messages."""
    out = {}
    for oid in prepared.stats.specs:
        node = prepared.graph.get(oid)
        value = node.args[0].id if node is not None and node.args else oid
        src = prepared.graph.node(value).meta.get("src") if value in prepared.graph else None
        out[oid] = f"observer %{oid} of %{value}" + (f" ({src})" if src else "")
    return out


def _observer_specs(state: PipelineState) -> dict:
    insertion = state.records.get("insert_observers")
    if insertion is None:
        return {}
    return {oid: slot.spec for oid, slot in insertion.slots.items() if not slot.is_weight}


def _check_eval(model: torch.nn.Module) -> None:
    # A batch norm in training mode updates its running statistics in place on every forward,
    # and those are the user's tensors: calibrating would change the user's model.
    from torch.nn.modules.batchnorm import _BatchNorm

    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats:
            raise ConfigError(
                f"{name or 'the model'} ({type(m).__name__}) is in training mode: calibration would "
                "update its running statistics, which are your tensors; prepare is post-training quantization",
                stage="prepare",
                hint="call model.eval() first (quantization-aware training is not supported yet)",
            )


def _check_one_device(model: torch.nn.Module) -> None:
    devices = {t.device for t in model.parameters()} | {t.device for t in model.buffers()}
    if len(devices) > 1:
        raise ConfigError(
            f"the model's tensors live on several devices: {', '.join(sorted(map(str, devices)))}",
            stage="prepare",
            hint="move the model to one device first (quantized kernels run on the CPU: model.cpu())",
        )


_CUSTOM_KEYS = ("leaf_modules", "concrete_args", "custom_module_types")


def _check_custom(custom: Any) -> None:
    if not isinstance(custom, dict):
        raise ConfigError(
            f"custom_config must be a dict, not {type(custom).__name__}",
            stage="prepare",
            hint="pass {'leaf_modules': [...], 'concrete_args': {...}, 'custom_module_types': [...]};"
            " torch.ao's PrepareCustomConfig maps onto these keys (see docs/migration.md)",
        )
    for key in custom:
        if key not in _CUSTOM_KEYS:
            raise ConfigError(
                f"unknown custom_config key {key!r}", hint=f"valid keys: {', '.join(_CUSTOM_KEYS)}"
            )


def _instruments(dump_dir: str | None):
    from .pipeline.instruments import DEFAULT_INSTRUMENTS

    ins = list(DEFAULT_INSTRUMENTS)
    if dump_dir is not None:
        from .pipeline.dump import Dump

        ins.append(Dump(dump_dir))
    return tuple(ins)


def _progress_bar():
    import sys

    def bar(count: int | None) -> None:
        if count is None:
            sys.stderr.write("\n")
        else:
            sys.stderr.write(f"\rcalibrating: {count} batches")
        sys.stderr.flush()

    return bar

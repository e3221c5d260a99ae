"""The `lower` stage: an observed, calibrated graph becomes a quantized one.

    lower(graph, params, modules, matches, insertion, qparams, target="native", backend="x86")
        -> (graph, params, modules, LoweringRecord)

1.7's `_convert` as one pure sweep (see `purequant.lowering.sweep`): observers become quantize
nodes (or vanish where the value already is quantized), every match's root is rewritten by its
handler's rule from an immutable table (`purequant.lowering.table`), everything else stays float
and reads dequantized values; graph outputs are float.

* target="native": torch's quantized tensors and `torch.ops.quantized.*` kernels; weights are
  quantized and prepacked by graph nodes (`quantized.conv2d_prepack(w_q, bias, stride, padding,
  dilation, groups)`), which `fold_weights` evaluates once. The kernels run on the engine of
  `backend`, which the shell sets (`purequant.backends.quantized_engine`) around folding and
  running, never here.
* target="reference": uint8/int8 tensors through `torch.ops.quantized_decomposed` quantize and
  dequantize ops around float ops: runs anywhere, exports with torch.export.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyrsistent import PMap

from ..backends import backend as get_backend
from ..errors import ConfigError
from ..ir import Graph, paused_gc
from ..lowering.dialect import DIALECTS
from ..lowering.record import LoweringRecord
from ..lowering.sweep import Sweep
from ..lowering.table import RULES

__all__ = ["LoweringRecord", "lower"]


def lower(
    graph: Graph,
    params: PMap,
    modules: PMap,
    matches: Any,
    insertion: Any,
    qparams: Mapping[str, Any],
    *,
    target: str = "native",
    backend: str = "x86",
    rules: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Graph, PMap, PMap, LoweringRecord]:
    """Lower an observed graph to quantized ops.

    Reads the observed graph (observers are `purequant.observe` nodes), `params` (weights, to
    compute their qparams: weights need no data), `modules` (ModuleSpecs of call_module nodes),
    `matches` (MatchResult of find_matches: node id -> Match with its handler), `insertion`
    (ObserverInsertion: observer id -> slot, shared qparams, weight specs) and `qparams`
    (observer id -> QParams, from calibration). `rules` replaces the default rule table
    (target -> handler -> rule).

    Returns the lowered graph (no observers; outputs float), params with the new entries
    (per-channel scales and zero points, under `_qparams.`; existing tensors untouched),
    modules without the specs no node calls any more, and a LoweringRecord (what was lowered
    with which ops, what stayed float and why). With nothing to do (no observers, no matches)
    the very same graph, params and modules come back.
    Pure; O(n + emitted nodes + total size of quantized weights).

    Raises:
        ConfigError: unknown target or backend.
    """
    table = (rules or RULES).get(target)
    if table is None or target not in DIALECTS:
        raise ConfigError(f"unknown lowering target {target!r}", hint="use 'native' or 'reference'")
    be = get_backend("reference" if target == "reference" else backend)
    sweep = Sweep(graph, params, modules, matches, insertion, qparams, DIALECTS[target], be)
    with paused_gc():
        new_graph = sweep.run(table)
    if new_graph == graph:
        return graph, params, modules, LoweringRecord(target, be.name)
    new_modules, dropped = _drop_uncalled(graph, new_graph, modules)
    new_params = params.update(sweep.added) if sweep.added else params
    record = LoweringRecord(
        target, be.name, tuple(sweep.lowered), tuple(sweep.skipped), tuple(sweep.quantized),
        tuple(sweep.requantized), tuple(sweep.dequantized), tuple(sweep.added), dropped, tuple(sweep.notes),
    )
    return new_graph, new_params, new_modules, record


def _drop_uncalled(old: Graph, new: Graph, modules: PMap) -> tuple[PMap, tuple[str, ...]]:
    """Remove the specs of modules the old graph called and the new one does not (the lowered
    ones), unless a get_attr reads the module itself. O(n)."""
    kept = {n.target for n in new.node_list() if n.op in ("call_module", "get_attr")}
    gone = sorted({n.target for n in old.node_list() if n.op == "call_module"} - kept)
    if not gone:
        return modules, ()
    ev = modules.evolver()
    for path in gone:
        del ev[path]
    return ev.persistent(), tuple(gone)

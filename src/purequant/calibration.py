"""Calibration: run the observed graph on batches and gather immutable statistics.

This is the shell around the pure observers: the observed graph is emitted once as a torch.fx
GraphModule whose `purequant.observe` nodes call a collector local to one run. The collector
folds `observers.observe` over the values it sees; what comes out is a `CalibrationStats`
value, which merges associatively, so calibration can be split across batches, processes and
machines (see `merge_stats`). Nothing the user gave is touched: the module runs on the params
map (the user's tensors, read-only) and its own observer-free forward.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from attrs import frozen
from pyrsistent import PMap, pmap

from .errors import StageError
from .ir import Graph, GraphBuilder, Node, Ref
from .observers import ObserverSpec, init_stats, merge, observe
from .observers.lastfold import forget as forget_last_fold

OBSERVE = "purequant.observe"


@frozen(eq=False)
class CalibrationStats:
    """Statistics of every observer, as one immutable value.

    Attributes:
        specs: observer id -> ObserverSpec (how each statistic merges and turns into qparams).
        stats: observer id -> statistics value (the identity until something was observed).
        batches: how many batches went in.
    """

    specs: PMap
    stats: PMap
    batches: int = 0


def empty_stats(specs: Mapping[str, ObserverSpec]) -> CalibrationStats:
    """The identity of `merge_stats` for these observers."""
    return CalibrationStats(pmap(specs), pmap({k: init_stats(s) for k, s in specs.items()}), 0)


def merge_stats(a: CalibrationStats, b: CalibrationStats) -> CalibrationStats:
    """Combine two shards' statistics. Associative, with `empty_stats` as identity.

    Raises StageError when the shards come from different observed graphs; the observers'
    own merge refuses order-dependent kinds (moving averages) unless one side is empty.
    """
    if a.specs != b.specs:
        raise StageError(
            "cannot merge statistics of different observed graphs",
            stage="calibrate",
            hint="merge only stats from observe_batch/calibrate on the same Prepared value",
        )
    merged = {k: merge(a.specs[k], a.stats[k], b.stats[k]) for k in a.specs}
    return CalibrationStats(a.specs, pmap(merged), a.batches + b.batches)


def keyed_observers(graph: Graph, shares: Mapping[str, str] | None = None) -> Graph:
    """The graph as calibration runs it: each observer told its own id (`key=` kwarg), and a
    tap after every value that shares another value's observer.

    A shared value (a later `cat` input, the output of an op that shares its input's qparams)
    has no observer node of its own, yet its range must reach the shared statistics, as
    torch.ao's shared observer instance sees every value it is attached to; otherwise the
    common qparams clip it. A tap is `purequant.observe(%v, key=<owner observer>)` whose result
    nothing reads. Pure; O(n). Kept out of the observed graph so records and dumps stay minimal.
    """
    shares = shares or {}
    b = GraphBuilder(counters=dict(graph.counters))
    for node in graph.node_list():
        if node.op == "call_function" and node.target == OBSERVE:
            node = Node(
                node.id, node.op, node.target, node.args, node.kwargs.set("key", node.id), node.meta
            )
        b.add(node)
        owner = shares.get(node.id)
        if owner is not None and node.op != "output":
            b.emit(
                "call_function", OBSERVE, (Ref(node.id),), {"key": owner}, prefix=node.id + "_tap"
            )
    return b.finish()


def strip_observers(graph: Graph) -> Graph:
    """The graph with every observer removed and its readers reading the observed value.

    Pure; O(n). The inverse of observer insertion (a property test checks exactly that).
    """
    if not any(n.op == "call_function" and n.target == OBSERVE for n in graph.node_list()):
        return graph
    b, alias = GraphBuilder(), {}
    for node in graph.node_list():
        if node.op == "call_function" and node.target == OBSERVE:
            alias[node.id] = alias.get(node.args[0].id, node.args[0].id)
            continue
        if alias:
            node = node.map_refs(lambda i: Ref(alias.get(i, i)))
        b.add(node)
    return b.finish()


class _Collector:
    """Folds observations of one run; lives only inside `run_observed`."""

    __slots__ = ("specs", "stats", "where")

    def __init__(self, start: CalibrationStats, where: Mapping[str, str]) -> None:
        # Plain dicts, built once: a persistent-map lookup costs ~1 us, and a batch makes ~100
        # observe calls, each reading the spec and the location.
        self.specs = dict(start.specs)
        self.stats = dict(start.stats)
        self.where = {k: where.get(k, k) for k in self.specs}

    def __call__(self, value: Any, key: str) -> Any:
        spec = self.specs.get(key)
        if spec is not None and isinstance(value, torch.Tensor) and value.is_floating_point():
            self.stats[key] = observe(spec, self.stats[key], value.detach(), self.where[key])
        return value


class ObserverHook:
    """Where a reusable observed module sends its observations: to the collector bound to the
    calling thread for the current run, or nowhere (identity) when none is.

    The observed module is emitted once per Prepared and reused by every calibration run
    (emitting costs up to ~0.8x of a forward per call on BERT); the hook is how each run plugs
    its own collector in. Per thread, so concurrent runs on one Prepared cannot mix.
    """

    __slots__ = ("_local",)

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, value: Any, key: str) -> Any:
        collector = getattr(self._local, "collector", None)
        return value if collector is None else collector(value, key)

    @contextmanager
    def bound(self, collector: Any) -> Iterator[None]:
        before = getattr(self._local, "collector", None)
        self._local.collector = collector
        try:
            yield
        finally:
            self._local.collector = before


def hooked_observe(hook: ObserverHook) -> Any:
    """A named function (fx's codegen wants one) forwarding observations to `hook`."""

    def purequant_observe(value: Any, key: str) -> Any:
        return hook(value, key)

    return purequant_observe


def run_observed(
    module: Any,
    hook: ObserverHook,
    start: CalibrationStats,
    batches: Iterable[Any],
    where: Mapping[str, str],
    progress: Any = None,
) -> CalibrationStats:
    """Run `batches` through the observed module, folding observations onto `start`.

    `module` is the observed GraphModule whose `purequant.observe` nodes call `hook`; this run
    binds its own collector to the hook. Observation is sequential (moving averages depend on
    order). O(batches * graph).
    """
    collector = _Collector(start, where)
    count = start.batches
    try:
        with torch.no_grad(), hook.bound(collector):
            for batch in batches:
                args = batch if isinstance(batch, tuple) else (batch,)
                module(*args)
                count += 1
                if progress is not None:
                    progress(count)
    finally:
        # The histogram observer memoises its last fold, holding that activation; release it.
        forget_last_fold()
    return CalibrationStats(start.specs, pmap(collector.stats), count)

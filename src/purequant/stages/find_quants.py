"""Stage: decide which values are observed and how (1.7's `_find_quants`, extended).

For every match, in the graph order of its root: its activation inputs get the qconfig's
activation spec, its output gets one by its observation kind (own, fixed, or the observer of
its first input), functional weights get the weight spec, module weights are noted by path.
Values that share qparams point at the value whose observer they use (its owner); only
owners get observer nodes. The first request for a value wins (torch.ao re-uses an existing observer), so
a value is never observed twice; a conflicting later request is noted, not applied. One exception,
for kernels that overflow otherwise: a conv the backend runs on a 16-bit kernel, under a qconfig
with `narrow_16bit_inputs` (the CPU-aware default), narrows its inputs' observers to reduce_range.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import evolve, frozen
from pyrsistent import PMap, pmap

from ..ir import Graph, ModuleSpec, paused_gc
from ..observers.spec import ObserverSpec
from ..patterns import Observation
from ..qconfig.cpu import depthwise_16bit
from .find_matches import Match, MatchResult

INPUT, OUTPUT, WEIGHT = "input", "output", "weight"


@frozen
class ValueQuant:
    """How one value is observed.

    Attributes:
        spec: the observer spec.
        is_weight: a weight (observed from parameters, no calibration data needed).
        role: why it is observed: "input" or "output" of a match, or "weight".
        requested_by: root id of the match that asked first.
    """

    spec: ObserverSpec
    is_weight: bool
    role: str
    requested_by: str


@frozen
class QuantPlan:
    """Which values are observed, which share an observer, and the weights to observe.

    Attributes:
        observe: value id -> ValueQuant, one observer each.
        shares: value id -> the value id in `observe` whose observer it shares.
        weights: module path (call_module weights) or get_attr id (a functional op's weight
            parameter) -> weight spec; observed from the parameters at convert time.
        dynamic: match root -> activation spec quantized at run time (no observer).
        notes: value id -> a request that was not applied, and why.
        narrowed: value id in `observe` -> (root of the match that reads it, why): its observer
            keeps reduce_range although its qconfig dropped it (the reader's kernel accumulates
            in 16 bits).
    """

    observe: PMap
    shares: PMap
    weights: PMap
    dynamic: PMap
    notes: PMap
    narrowed: PMap = pmap()  # immutable, so one shared default is safe

    @property
    def is_empty(self) -> bool:
        return not (self.observe or self.shares or self.weights or self.dynamic)


def find_quants(
    graph: Graph, matches: MatchResult, *, modules: Mapping[str, ModuleSpec] | None = None,
    backend: str | None = None,
) -> QuantPlan:
    """Plan the observation of every matched pattern's inputs, outputs and weights.

    Reads the graph (node order and ops) and the MatchResult. Graph outputs request nothing:
    they stay float. Given `backend` and the conv `modules`, a match whose qconfig has
    `narrow_16bit_inputs` and whose conv `backend` runs on a 16-bit kernel
    (`qconfig.cpu.depthwise_16bit`) narrows its inputs' observers to reduce_range, recorded in
    `narrowed`. Pure; O(n + matched edges).
    """
    with paused_gc():  # allocation-heavy and cycle-free (see insert_observers)
        plan = _Planner(graph)
        roots = matches.roots(graph)
        for m in roots:
            _plan_match(plan, m)
        for m in roots if backend is not None else ():
            _narrow_16bit_inputs(plan, m, modules or {}, backend)
        return plan.finish()


def _plan_match(p: _Planner, m: Match) -> None:
    """Requests for one match: inputs, weights, then the output."""
    qc, act = m.qconfig, m.qconfig.activation
    if m.is_dynamic:
        p.dynamic[m.root] = act
    static = act is not None and not act.is_dynamic and act.dtype != "float32"
    if static and m.observe_inputs and m.observation is not Observation.NONE:
        for v in m.inputs:
            p.request(v, ValueQuant(act, False, INPUT, m.root))
    if qc.weight is not None:
        _plan_weights(p, m, qc.weight)
    if not static or m.output_spec is None:
        return
    if m.observation in (Observation.OWN_OUTPUT, Observation.FIXED):
        p.request(m.root, ValueQuant(m.output_spec, False, OUTPUT, m.root))
    elif m.observation is Observation.SHARES_INPUT and m.shared_inputs:
        _plan_sharing(p, m)


def _plan_sharing(p: _Planner, m: Match) -> None:
    """The output uses its first input's observer; for cat/stack, so does every element.

    torch.ao points each edge's observer at the first input's, so an element that had an
    observer of its own gives it up, and values that shared it keep it for themselves.
    """
    first, *rest = m.shared_inputs
    owner = p.owner(first)
    if owner is None:  # nothing observes the input (torch.ao drops the output observer too)
        return
    for v in rest:
        p.repoint(v, owner, m.root)
    p.share(m.root, owner)


def _narrow_16bit_inputs(p: _Planner, m: Match, modules: Mapping[str, ModuleSpec], backend: str) -> None:
    """A conv on a 16-bit kernel reads 7-bit inputs: their observers keep reduce_range.

    Runs once every match is planned, so it narrows whichever value owns each input's observer
    by then (usually the producer's output, which the input shares), and so every value
    sharing that observer: they share its qparams.
    """
    if not m.qconfig.narrow_16bit_inputs or m.module_weight not in modules:
        return
    why = depthwise_16bit(backend, modules[m.module_weight], m.qconfig.weight)
    for v in m.inputs if why is not None else ():
        p.narrow(v, m.root, why)


def _plan_weights(p: _Planner, m: Match, spec: ObserverSpec) -> None:
    if m.module_weight is not None and m.module_weight not in p.weights:
        p.weights[m.module_weight] = spec
    for w in m.weights:
        if p.graph.nodes[w].op == "get_attr":
            p.weights.setdefault(w, spec)  # a parameter: observed from params, no node
        else:
            p.request(w, ValueQuant(spec, True, WEIGHT, m.root))


class _Planner:
    """Mutable scratch state of one find_quants call; never escapes it.

    Every observed value has an owner: itself when it has an observer of its own (`quant`),
    else the value whose observer it shares (`shared`). Sharing is resolved when requested,
    so chains (relu -> pool -> flatten) all point at the first observed value.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.quant: dict[str, ValueQuant] = {}  # owner -> how it is observed
        self.shared: dict[str, str] = {}  # value -> owner whose observer it uses
        self.sharers: dict[str, list[str]] = {}  # owner -> values sharing it, in request order
        self.weights: dict[str, ObserverSpec] = {}
        self.dynamic: dict[str, ObserverSpec] = {}
        self.notes: dict[str, str] = {}
        self.narrowed: dict[str, tuple[str, str]] = {}  # owner -> (reader, why)

    def owner(self, v: str) -> str | None:
        return v if v in self.quant else self.shared.get(v)

    def request(self, v: str, vq: ValueQuant) -> None:
        """Observe `v` as `vq` unless it is observed already (then note a differing spec)."""
        o = self.owner(v)
        if o is None:
            self.quant[v] = vq
        elif _dtype_differs(self.quant[o].spec, vq.spec) and v not in self.notes:
            have = self.quant[o]
            self.notes[v] = (
                f"%{vq.requested_by} asked for {_describe(vq)}; kept {_describe(have)} "
                f"from %{have.requested_by}"
            )

    def narrow(self, v: str, reader: str, why: str) -> None:
        """The observer of `v` keeps reduce_range (7 bits), unless its range is fixed."""
        o = self.owner(v)
        if o is None or self.quant[o].spec.reduce_range:
            return
        vq = self.quant[o]
        s = vq.spec
        if s.kind == "fixed" or s.quant_min is not None or s.is_dynamic or s.dtype != "quint8":
            self.notes.setdefault(v, f"%{reader} asked for 7 bits ({why}); kept {_describe(vq)} "
                                     f"from %{vq.requested_by}: its range is set")
            return
        self.quant[o] = evolve(vq, spec=evolve(s, reduce_range=True))
        self.narrowed[o] = (reader, why)

    def share(self, v: str, owner: str) -> None:
        """`v` (not observed yet) uses `owner`'s observer."""
        self.shared[v] = owner
        self.sharers.setdefault(owner, []).append(v)

    def repoint(self, v: str, owner: str, by: str) -> None:
        """`v` gives up its observer (own or shared) and uses `owner`'s instead."""
        cur = self.owner(v)
        if cur == owner or cur is None:
            if cur is None:
                self.share(v, owner)
            return
        if cur == v:
            self._give_up(v, owner, by)
        else:
            self.sharers[cur].remove(v)
            del self.shared[v]
        self.share(v, owner)

    def _give_up(self, v: str, owner: str, by: str) -> None:
        # Values that shared v's observer keep it: the first of them becomes its owner.
        vq = self.quant.pop(v)
        if _differs(vq.spec, self.quant[owner].spec):
            self.notes[v] = f"%{by} makes it share %{owner}'s observer, dropping {_describe(vq)}"
        orphans = self.sharers.pop(v, [])
        if orphans:
            heir, *others = orphans
            del self.shared[heir]
            self.quant[heir] = vq
            for x in others:
                self.shared[x] = heir
            if others:
                self.sharers[heir] = others

    def finish(self) -> QuantPlan:
        return QuantPlan(
            pmap(self.quant), pmap(self.shared), pmap(self.weights), pmap(self.dynamic),
            pmap(self.notes), pmap(self.narrowed),
        )


def _dtype_differs(a: ObserverSpec, b: ObserverSpec) -> bool:
    # Only a different dtype would need a second observer in torch.ao; a reader asking for
    # another observer kind of the same dtype (histogram after fixed) simply re-uses the first.
    return (a.dtype, a.is_dynamic) != (b.dtype, b.is_dynamic)


def _differs(a: ObserverSpec, b: ObserverSpec) -> bool:
    # Giving up an observer for another's: fixed qparams are exact, so losing them is noted.
    return _dtype_differs(a, b) or ((a.kind == "fixed" or b.kind == "fixed") and a != b)


def _describe(vq: ValueQuant) -> str:
    s = vq.spec
    extra = f" scale={s.option('scale')}" if s.kind == "fixed" else ""
    return f"{vq.role} {s.kind}/{s.dtype}{extra}"

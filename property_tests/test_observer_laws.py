"""Laws of the observer statistics, checked with Hypothesis over random small batches.

* identity: init_stats(spec) is a two-sided identity of merge (every kind);
* associativity: merge(merge(a, b), c) == merge(a, merge(b, c)) (every mergeable kind);
* split-then-merge equals observing the whole sequence, exactly (min/max kinds, the dyadic
  histogram searches, and "histogram" keeping raw batches);
* order independence: min/max kinds and the dyadic histogram depend on the multiset of values
  only (this catches a wrong re-gridding, which the split law alone would not);
* purity: observe never mutates its tensor or the statistics it was given;
* moving averages refuse to merge two non-empty statistics;
* qparams are well-formed: positive finite scales, zero points inside the integer range.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from purequant.observers import (
    ObserverMergeError,
    ObserverSpec,
    init_stats,
    merge,
    observe,
    qparams,
)

SETTINGS = settings(max_examples=50, deadline=None)
CHANNELS = 3  # batches are (rows, CHANNELS); per-channel specs use ch_axis 1

EXACT = [
    ObserverSpec("minmax"),
    ObserverSpec("minmax", dtype="qint8", qscheme="per_tensor_symmetric"),
    ObserverSpec("per_channel_minmax", dtype="qint8", qscheme="per_channel_symmetric", ch_axis=1),
    ObserverSpec("per_channel_minmax", qscheme="per_channel_affine_float_qparams", ch_axis=1),
    ObserverSpec("histogram", options={"raw_budget": None, "bins": 128}),
    ObserverSpec("percentile", options={"bins": 64}),
    ObserverSpec("mse", dtype="qint8", qscheme="per_tensor_symmetric", options={"bins": 64, "grid": 20}),
    ObserverSpec("entropy", options={"bins": 64}),
]
# Mergeable, but a folded shard after the first is re-binned (approximate qparams).
FOLDING = [
    ObserverSpec("histogram", options={"raw_budget": 0, "bins": 128}),
    ObserverSpec("histogram", options={"raw_budget": 7, "bins": 128}),
]
MOVING = [
    ObserverSpec("moving_average_minmax", options={"averaging_constant": 0.25}),
    ObserverSpec("moving_average_per_channel_minmax", qscheme="per_channel_affine", ch_axis=1),
]
TRIVIAL = [
    ObserverSpec("fixed", options={"scale": 0.5, "zero_point": 3}),
    ObserverSpec("placeholder", is_dynamic=True),
]
ALL = EXACT + FOLDING + MOVING + TRIVIAL
QPARAMS_KINDS = EXACT + FOLDING + MOVING

values = st.one_of(
    st.floats(-1.0, 1.0, width=32, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 1.0, -1.0]),  # signed zeros and subnormals
)


@st.composite
def batch(draw) -> torch.Tensor:
    """A (rows, CHANNELS) float32 batch at its own magnitude, so ranges grow and shrink a lot."""
    rows = draw(st.integers(1, 4))
    x = draw(arrays(np.float32, (rows, CHANNELS), elements=values))
    return torch.from_numpy(x) * 2.0 ** draw(st.integers(-20, 14))  # exact scaling


batch = batch()
sequences = st.lists(batch, min_size=0, max_size=4)


def observe_all(spec: ObserverSpec, xs: list[torch.Tensor]):
    stats = init_stats(spec)
    for x in xs:
        stats = observe(spec, stats, x)
    return stats


def ids(spec: ObserverSpec) -> str:
    return f"{spec.kind}-{spec.qscheme}-{dict(spec.options)}"


def tensors_in(value) -> list[torch.Tensor]:
    """Every tensor reachable from an attrs value (through fields and tuples)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple):
        return [t for v in value for t in tensors_in(v)]
    if attrs.has(type(value)):
        return [t for f in attrs.fields(type(value)) for t in tensors_in(getattr(value, f.name))]
    return []


@pytest.mark.parametrize("spec", ALL, ids=ids)
@SETTINGS
@given(xs=sequences)
def test_init_is_identity(spec, xs):
    s = observe_all(spec, xs)
    e = init_stats(spec)
    assert merge(spec, e, s) == s
    assert merge(spec, s, e) == s


@pytest.mark.parametrize("spec", EXACT + FOLDING + TRIVIAL, ids=ids)
@SETTINGS
@given(xa=sequences, xb=sequences, xc=sequences)
def test_merge_is_associative(spec, xa, xb, xc):
    a, b, c = (observe_all(spec, xs) for xs in (xa, xb, xc))
    assert merge(spec, merge(spec, a, b), c) == merge(spec, a, merge(spec, b, c))


@pytest.mark.parametrize("spec", EXACT, ids=ids)
@SETTINGS
@given(xs=sequences, cuts=st.lists(st.integers(0, 4), max_size=3))
def test_split_then_merge_equals_whole(spec, xs, cuts):
    bounds = [0, *sorted(min(c, len(xs)) for c in cuts), len(xs)]
    merged = init_stats(spec)
    for lo, hi in zip(bounds, bounds[1:]):
        merged = merge(spec, merged, observe_all(spec, xs[lo:hi]))
    whole = observe_all(spec, xs)
    assert merged == whole
    if any(x.numel() for x in xs):
        assert qparams(spec, merged) == qparams(spec, whole)


@pytest.mark.parametrize("spec", [s for s in EXACT if s.kind != "histogram"], ids=ids)
@SETTINGS
@given(xs=sequences, data=st.data())
def test_order_does_not_matter(spec, xs, data):
    shuffled = data.draw(st.permutations(xs))
    assert observe_all(spec, shuffled) == observe_all(spec, xs)
    a, b = observe_all(spec, xs[:2]), observe_all(spec, xs[2:])
    assert merge(spec, a, b) == merge(spec, b, a)


@pytest.mark.parametrize("spec", ALL, ids=ids)
@SETTINGS
@given(before=sequences, x=batch)
def test_observe_mutates_nothing(spec, before, x):
    stats = observe_all(spec, before)
    held = [(t, t._version, t.clone()) for t in tensors_in(stats)]
    x_version, x_copy = x._version, x.clone()
    after = observe(spec, stats, x)
    assert x._version == x_version and torch.equal(x, x_copy)
    for t, version, copy in held:
        assert t._version == version and torch.equal(t, copy)
    # The new statistics share no storage the caller could still write to.
    x.add_(1.0)
    assert after == observe(spec, stats, x_copy)


@pytest.mark.parametrize("spec", MOVING, ids=ids)
@SETTINGS
@given(xa=st.lists(batch, min_size=1, max_size=3), xb=st.lists(batch, min_size=1, max_size=3))
def test_moving_average_merge_refuses(spec, xa, xb):
    a, b = observe_all(spec, xa), observe_all(spec, xb)
    with pytest.raises(ObserverMergeError):
        merge(spec, a, b)


@pytest.mark.parametrize("spec", QPARAMS_KINDS, ids=ids)
@SETTINGS
@given(xs=st.lists(batch, min_size=1, max_size=4))
def test_qparams_are_well_formed(spec, xs):
    q = qparams(spec, observe_all(spec, xs))
    assert all(0 < s < float("inf") for s in q.scale)
    if spec.qscheme != "per_channel_affine_float_qparams":
        assert all(q.quant_min <= z <= q.quant_max for z in q.zero_point)
    assert len(q.scale) == (CHANNELS if spec.per_channel else 1)

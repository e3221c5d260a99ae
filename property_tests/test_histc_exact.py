"""`observers.histc.histc` equals `torch.histc` bit for bit (the histogram observer's qparams
are bit-identical to torch.ao's only if every batch's counts are).

Adversarial values: every bin edge of the linspace grid and its float32 neighbours, the range
ends, ties, subnormals, ranges wider than the data (a batch folded into a grown range), ranges
so wide that histc's float32 arithmetic overflows (histc is called itself), min == max,
non-power-of-two bin counts, transposed / channels-last / sliced layouts, and a bin holding more
than 2**24 values (histc's float32 counters saturate).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from purequant.observers.histc import dense_flat, histc

SETTINGS = settings(max_examples=300, deadline=None)
BINS = st.sampled_from([1, 2, 3, 7, 100, 128, 2047, 2048, 2049, 4096])
F32_MAX = float(np.finfo(np.float32).max)
# Range ends across scales: around 1, tiny (subnormal steps), huge (near overflow), exact zero.
ENDS = st.one_of(
    st.floats(-10, 10, width=32),
    st.floats(-(2.0**-120), 2.0**-120, width=32),
    st.floats(-F32_MAX, F32_MAX, width=32),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 6.0, 2.0**-149, 2.0**-126]),
)


def f32(v: float) -> float:
    return float(np.float32(v))


def edge_values(lo: float, hi: float, bins: int) -> torch.Tensor:
    """The linspace edges histc builds, with their float32 neighbours, clipped to [lo, hi]."""
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float32)
    near = torch.cat([edges, torch.nextafter(edges, torch.tensor(np.inf)),
                      torch.nextafter(edges, torch.tensor(-np.inf))])
    return near[torch.isfinite(near)].clamp(lo, hi)


def assert_same(x: torch.Tensor, bins: int, lo: float, hi: float) -> None:
    expected = torch.histc(x, bins, min=lo, max=hi)
    got = histc(x, bins, lo, hi)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    diff = (got != expected).nonzero().flatten()[:5].tolist()
    assert not diff, f"bins {diff}: ours {got[diff].tolist()} vs histc {expected[diff].tolist()}"


@st.composite
def cases(draw):
    a, b = draw(ENDS), draw(ENDS)
    lo, hi = min(a, b), max(a, b)
    bins = draw(BINS)
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    n = draw(st.integers(1, 3000))
    inner = torch.rand(n, generator=g, dtype=torch.float64) * (hi - lo) + lo
    parts = [inner.float().clamp(lo, hi), torch.tensor([lo, hi], dtype=torch.float32)]
    if draw(st.booleans()) and lo < hi:
        parts.append(edge_values(lo, hi, bins))
    if draw(st.booleans()):  # ties: a few values repeated many times
        pool = torch.cat(parts)
        parts.append(pool[torch.randint(0, pool.numel(), (draw(st.integers(1, 500)),), generator=g)])
    x = torch.cat(parts)
    x = x[torch.randperm(x.numel(), generator=g)]
    # The fold bins a batch against a range that grew past it: widen sometimes.
    if draw(st.booleans()):
        lo = f32(max(-F32_MAX, lo - draw(st.floats(0, 10)) * (hi - lo + 1)))
    if draw(st.booleans()):
        hi = f32(min(F32_MAX, hi + draw(st.floats(0, 10)) * (hi - lo + 1)))
    return x, bins, lo, hi


@SETTINGS
@given(cases())
def test_histc_matches_torch(case):
    x, bins, lo, hi = case
    assert_same(x, bins, lo, hi)


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-1.0, 1.0), (0.0, 6.0), (-3.7, 11.3), (1e-3, 1e-3 + 1e-6),
                                   (-(2.0**-130), 2.0**-130), (0.0, 2.0**-140), (-1e30, 1e30),
                                   (-F32_MAX, F32_MAX), (-1e35, 1e35), (5.0, 5.0), (0.0, 0.0),
                                   (2.0**-149, 2.0**-149)])
@pytest.mark.parametrize("bins", [1, 3, 2048, 2049])
def test_every_edge_and_neighbour(lo, hi, bins):
    lo, hi = f32(lo), f32(hi)
    x = edge_values(lo, hi, bins) if lo < hi else torch.full((10,), lo)
    assert_same(x, bins, lo, hi)


def test_every_float32_in_a_narrow_range():
    """All 2**20 float32 values of [1, 1.125): every rounding case of the division."""
    x = (torch.arange(2**20, dtype=torch.int32) + np.float32(1.0).view(np.int32)).view(torch.float32)
    for bins in (7, 2048, 3000):
        assert_same(x, bins, 1.0, f32(x.max().item()))
        assert_same(x, bins, 0.0, 2.0)
        assert_same(x, bins, 0.9, 1.2)


@pytest.mark.parametrize("make", [
    lambda x: x.reshape(8, 16, 24).transpose(0, 2),
    lambda x: x.reshape(2, 8, 12, 16).to(memory_format=torch.channels_last),
    lambda x: x.reshape(64, 48)[:, ::2],
    lambda x: x.reshape(64, 48)[3:40, 5:7],
    lambda x: x.reshape(64, 48).expand(2, 64, 48),
])
def test_layouts(make):
    x = make(torch.randn(3072, generator=torch.Generator().manual_seed(0)))
    lo, hi = torch.aminmax(x)
    assert_same(x, 2048, lo.item(), hi.item())
    assert sorted(dense_flat(x).tolist()) == sorted(x.reshape(-1).tolist())


def test_saturated_count_falls_back_to_histc():
    """More than 2**24 values in one bin: histc's float32 counter stops at 2**24."""
    x = torch.zeros(2**24 + 3)
    x[:2] = 1.0
    assert_same(x, 2048, 0.0, 1.0)
    assert torch.histc(x, 2048, min=0.0, max=1.0)[0].item() == 2**24


def test_many_values_below_saturation():
    x = torch.arange(2**24 + 9, dtype=torch.float32) % 1000
    assert_same(x, 2048, 0.0, 999.0)

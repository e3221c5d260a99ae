"""The histogram observer's last-fold memo (observers/lastfold.py) changes speed, never results.

Sequences of observations under one key, as the observed graph makes them (a value, then views
and clamps of it, in-place writes in between), must give torch.ao's HistogramObserver buffers
bit for bit, and the same statistics as with the memo dropped before every observe. A spy on the
binning checks that the shortcut is really taken where it should be, and not elsewhere.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.quantization.observer import HistogramObserver

from purequant import calibrate, prepare
from purequant.observers import ObserverSpec, init_stats, lastfold, observe, qparams
from purequant.observers import histogram as histogram_module

SPEC = ObserverSpec("histogram", reduce_range=True)


def run(values, memo: bool = True):
    stats = init_stats(SPEC)
    for v in values:
        if not memo:
            lastfold.forget()
        stats = observe(SPEC, stats, v)
    lastfold.forget()
    return stats


def torch_ao(values):
    obs = HistogramObserver(reduce_range=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v in values:
            obs(v)
    return obs


def assert_matches(values) -> None:
    ours, plain, ref = run(values), run(values, memo=False), torch_ao(values)
    state = ours.chunks[0]
    assert torch.equal(state.hist, ref.histogram)
    assert (state.min_val, state.max_val) == (ref.min_val.item(), ref.max_val.item())
    assert ours == plain
    assert qparams(SPEC, ours) == qparams(SPEC, plain)


@pytest.fixture
def binned(monkeypatch):
    """Counts the batches actually binned."""
    calls = []

    def spy(values, bins, lo, hi):
        calls.append(values.numel())
        return real(values, bins, lo, hi)

    real = histogram_module.histc
    monkeypatch.setattr(histogram_module, "histc", spy)
    return calls


def sample(seed: int = 0, shape=(4, 8, 16, 16)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def test_views_reuse_the_last_counts(binned):
    x = sample()
    values = [x, x.reshape(4, -1), x.transpose(1, 3), x.permute(3, 2, 1, 0), x[:]]
    assert_matches(values)
    binned.clear()
    run(values)
    assert binned == [x.numel()]


def test_clamps_are_derived(binned):
    x = sample(1)
    values = [x, torch.nn.functional.relu6(x), torch.relu(x), x.clamp(-0.5, 0.25), x.clamp(min=2.0)]
    assert_matches(values)
    binned.clear()
    run(values[:2])
    assert binned == [x.numel()]


def test_a_near_clamp_is_binned(binned):
    """Equal to a clamp on every sampled element but one unsampled element: binned in full."""
    x = sample(11)
    y = torch.nn.functional.relu6(x)
    flat = y.view(-1)
    flat[1] = 0.5 if flat[1] != 0.5 else 0.25
    assert_matches([x, y])
    binned.clear()
    run([x, y])
    assert len(binned) == 2


def test_clamp_chain_and_clamp_of_a_view():
    x = sample(2)
    y = torch.nn.functional.hardtanh(x, -1.0, 1.0)
    assert_matches([x, y, y.clamp(0.0, 0.5), y.clamp(0.0, 0.5).transpose(0, 1)])


def test_other_ops_are_binned(binned):
    x = sample(3)
    values = [x, x * 0.5, x + 1.0, torch.tanh(x), x.flip(0), x.sort(dim=-1).values]
    assert_matches(values)
    binned.clear()
    run(values)
    assert len(binned) == len(values)


def test_in_place_writes_defeat_the_memo(binned):
    x = sample(4)
    first = x.clone()
    stats = observe(SPEC, init_stats(SPEC), first)
    first.mul_(0.5)  # the held tensor changes under the memo
    stats = observe(SPEC, stats, first.view(-1))
    x2 = sample(5)
    stats = observe(SPEC, stats, x2)
    torch.nn.functional.relu6(x2, inplace=True)  # the same object, new version
    stats = observe(SPEC, stats, x2)
    lastfold.forget()
    ref = torch_ao([x, x * 0.5, sample(5), torch.nn.functional.relu6(sample(5))])
    assert torch.equal(stats.chunks[0].hist, ref.histogram)
    assert len(binned) == 4


def test_a_clamp_that_widens_the_range_is_binned(binned):
    x = -sample(6).abs() - 1.0  # all negative: relu(x) is all zeros, above the range
    assert_matches([x, torch.relu(x)])
    binned.clear()
    run([x, torch.relu(x)])
    assert len(binned) == 2


def test_the_memo_applies_only_to_the_statistics_it_made(binned):
    x, other = sample(7), sample(8)
    s1 = observe(SPEC, init_stats(SPEC), x)
    s2 = observe(SPEC, init_stats(SPEC), other)  # the memo now belongs to s2
    s3 = observe(SPEC, s1, x.view(-1))
    lastfold.forget()
    assert len(binned) == 3
    assert torch.equal(s3.chunks[0].hist, torch_ao([x, x]).histogram)
    assert s2 == run([other])


def test_inference_tensors_and_float64_take_the_plain_path():
    with torch.inference_mode():
        x = sample(9)
        values = [x, x.view(-1), torch.relu(x)]
        assert_matches(values)
    x64 = sample(10).double()
    assert run([x64, x64.view(-1)]) == run([x64, x64.view(-1)], memo=False)


def test_calibrate_releases_the_memo():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU6(), torch.nn.Flatten()).eval()
    x = torch.randn(2, 3, 8, 8)
    calibrate(prepare(model, None, (x,)), [x])
    assert getattr(lastfold._LOCAL, "last", None) is None


OPS = st.sampled_from(["view", "transpose", "relu", "relu6", "clamp", "scale", "fresh", "inplace"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(OPS, st.floats(-3, 3), st.floats(0, 3)), min_size=1, max_size=8),
       st.integers(0, 2**31 - 1))
def test_random_sequences_match_torch_ao(steps, seed):
    g = torch.Generator().manual_seed(seed)
    current = torch.randn(3, 5, 7, generator=g)
    ours = init_stats(SPEC)
    seen = []
    for op, a, width in steps:
        if op == "view":
            current = current.reshape(-1)
        elif op == "transpose":
            current = current.reshape(3, 5, 7).transpose(0, 2) if current.numel() == 105 else current
        elif op in ("relu", "relu6", "clamp"):
            lo, hi = {"relu": (0.0, None), "relu6": (0.0, 6.0), "clamp": (a, a + width)}[op]
            current = current.clamp(lo, hi)
        elif op == "scale":
            current = current * a
        elif op == "fresh":
            current = torch.randn(3, 5, 7, generator=g) * (1 + width)
        else:
            current.add_(a)  # in place: earlier observations already saw the old values
        seen.append(current.clone())
        ours = observe(SPEC, ours, current)
    lastfold.forget()
    ref = torch_ao(seen)
    assert torch.equal(ours.chunks[0].hist, ref.histogram)
    assert ours == run(seen, memo=False)

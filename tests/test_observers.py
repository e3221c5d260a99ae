"""Observers as pure statistics: agreement with torch.ao, errors, searches, torch.ao reading.

Agreement tests run torch.ao's observer and ours on the same batches (ranges that grow and shrink)
and require scale relative error <= 1e-6 and identical zero points.
"""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from torch.ao.quantization import observer as tao

from purequant.observers import (
    EmptyStatsError,
    NonFiniteError,
    NoQParamsError,
    ObserverConfigError,
    ObserverMergeError,
    ObserverShapeError,
    ObserverSpec,
    RangeStats,
    StatsTypeError,
    from_torch_observer,
    init_stats,
    merge,
    observe,
    qparams,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TORCH_DTYPE = {"quint8": torch.quint8, "qint8": torch.qint8, "qint32": torch.qint32,
               "quint4x2": torch.quint4x2}
TORCH_QSCHEME = {q: getattr(torch, q) for q in (
    "per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
    "per_channel_affine_float_qparams")}
# (scale, shift) per batch: the range grows, shrinks inside, grows on one side only...
PROFILE = [(1.0, 0.0), (4.0, 1.0), (0.5, -0.5), (8.0, -3.0), (0.25, 0.0), (2.0, 5.0)]


def batches(shape: tuple[int, ...], seed: int = 0, channel_axis: int | None = None) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for scale, shift in PROFILE:
        x = torch.randn(*shape, generator=g) * scale + shift
        if channel_axis is not None:  # give every channel its own range
            view = [1] * len(shape)
            view[channel_axis] = shape[channel_axis]
            x = x * torch.linspace(0.1, 3.0, shape[channel_axis]).reshape(view)
        out.append(x)
    return out


def run_ours(spec: ObserverSpec, xs: list[torch.Tensor]):
    stats = init_stats(spec)
    for x in xs:
        stats = observe(spec, stats, x)
    return qparams(spec, stats)


def run_torch(obs, xs: list[torch.Tensor]):
    for x in xs:
        obs(x)
    return obs.calculate_qparams()


def assert_agree(ours, ref) -> None:
    scale, zero_point = ref
    ref_scale = scale.reshape(-1).tolist()
    assert len(ours.scale) == len(ref_scale)
    for a, b in zip(ours.scale, ref_scale):
        assert abs(a - b) <= 1e-6 * abs(b), (ours.scale, ref_scale)
    assert list(ours.zero_point) == zero_point.reshape(-1).tolist()


def configs(per_channel: bool):
    """(dtype, qscheme, reduce_range, custom range) combinations torch.ao accepts."""
    schemes = (["per_channel_affine", "per_channel_symmetric"] if per_channel
               else ["per_tensor_affine", "per_tensor_symmetric"])
    custom = {"quint8": (0, 127), "qint8": (-100, 90)}
    out = []
    for dtype in ("quint8", "qint8"):
        for qscheme in schemes:
            for reduce_range in (False, True):
                if reduce_range and dtype == "quint8" and qscheme.endswith("symmetric"):
                    continue  # torch.ao refuses it (and so do we, see test_config_errors)
                for qrange in (None, custom[dtype]):
                    out.append((dtype, qscheme, reduce_range, qrange))
    return out


def make_pair(kind: str, torch_cls, dtype, qscheme, reduce_range, qrange, **extra):
    """torch.ao observer and the equivalent spec, written independently of from_torch_observer."""
    kw = dict(dtype=TORCH_DTYPE[dtype], qscheme=TORCH_QSCHEME[qscheme], reduce_range=reduce_range)
    torch_extra = {k: v for k, v in extra.items() if k != "options"}
    spec_range = {}
    if qrange is not None:
        kw.update(quant_min=qrange[0], quant_max=qrange[1])
        # Spec ranges are effective: torch.ao halves a custom range under reduce_range.
        div = 2 if reduce_range else 1
        spec_range = dict(quant_min=qrange[0] // div, quant_max=qrange[1] // div)
    spec = ObserverSpec(kind, dtype=dtype, qscheme=qscheme, reduce_range=reduce_range,
                        ch_axis=extra.get("ch_axis", 0), options=extra.get("options", {}),
                        **spec_range)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch_cls(**kw, **torch_extra), spec


# --- agreement with torch.ao ---------------------------------------------------------------------


@pytest.mark.parametrize("config", configs(per_channel=False))
def test_minmax_matches_torch(config):
    obs, spec = make_pair("minmax", tao.MinMaxObserver, *config)
    xs = batches((3, 4, 5))
    assert_agree(run_ours(spec, xs), run_torch(obs, xs))


@pytest.mark.parametrize("config", configs(per_channel=False))
def test_moving_average_matches_torch(config):
    obs, spec = make_pair("moving_average_minmax", tao.MovingAverageMinMaxObserver, *config,
                          averaging_constant=0.3, options={"averaging_constant": 0.3})
    xs = batches((3, 4, 5), seed=1)
    assert_agree(run_ours(spec, xs), run_torch(obs, xs))


@pytest.mark.parametrize("ch_axis", [0, 1])
@pytest.mark.parametrize("config", configs(per_channel=True))
def test_per_channel_matches_torch(config, ch_axis):
    obs, spec = make_pair("per_channel_minmax", tao.PerChannelMinMaxObserver, *config, ch_axis=ch_axis)
    xs = batches((6, 5, 4, 3), seed=2, channel_axis=ch_axis)
    ours = run_ours(spec, xs)
    assert_agree(ours, run_torch(obs, xs))
    assert ours.axis == ch_axis and len(ours.scale) == (6, 5)[ch_axis]


@pytest.mark.parametrize("ch_axis", [0, 1, -1])
def test_moving_average_per_channel_matches_torch(ch_axis):
    obs, spec = make_pair("moving_average_per_channel_minmax",
                          tao.MovingAveragePerChannelMinMaxObserver, "qint8",
                          "per_channel_symmetric", False, None, ch_axis=ch_axis,
                          averaging_constant=0.2, options={"averaging_constant": 0.2})
    xs = batches((6, 5, 4), seed=3, channel_axis=ch_axis)
    assert_agree(run_ours(spec, xs), run_torch(obs, xs))


@pytest.mark.parametrize("dtype", ["quint8", "quint4x2"])
def test_float_qparams_match_torch(dtype):
    obs = tao.PerChannelMinMaxObserver(dtype=TORCH_DTYPE[dtype], ch_axis=0,
                                       qscheme=torch.per_channel_affine_float_qparams)
    spec = ObserverSpec("per_channel_minmax", dtype=dtype,
                        qscheme="per_channel_affine_float_qparams")
    xs = batches((8, 16), seed=4, channel_axis=0)
    ours = run_ours(spec, xs)
    assert all(isinstance(z, float) for z in ours.zero_point)
    assert_agree(ours, run_torch(obs, xs))


@pytest.mark.parametrize("dtype,qscheme", [("qint32", "per_tensor_affine"),
                                           ("qint32", "per_tensor_symmetric"),
                                           ("quint4x2", "per_tensor_affine")])
def test_minmax_other_dtypes_match_torch(dtype, qscheme):
    obs, spec = make_pair("minmax", tao.MinMaxObserver, dtype, qscheme, False, None)
    xs = batches((10,), seed=5)
    assert_agree(run_ours(spec, xs), run_torch(obs, xs))


def test_minmax_constant_and_empty_batches_match_torch():
    obs, spec = make_pair("minmax", tao.MinMaxObserver, "quint8", "per_tensor_affine", False, None)
    xs = [torch.zeros(4), torch.empty(0), torch.zeros(3)]
    assert_agree(run_ours(spec, xs), run_torch(obs, xs))


def histogram_configs():
    out = [c for c in configs(per_channel=False)]
    return [(*c, bins) for c, bins in zip(out, [2048, 256] * len(out))]


@pytest.mark.parametrize("config", histogram_configs())
def test_histogram_matches_torch(config):
    *config, bins = config
    obs, spec = make_pair("histogram", tao.HistogramObserver, *config, bins=bins,
                          options={"bins": bins})
    xs = batches((2, 8, 16), seed=6)
    xs[2] = xs[2].clamp_min(0)  # a post-ReLU-like batch inside the range
    assert_agree(run_ours(spec, xs), run_torch(obs, xs))


@pytest.mark.parametrize("budget", [0, 300, 1000, None])
def test_histogram_budget_does_not_change_one_stream(budget):
    xs = batches((2, 8, 16), seed=7)
    spec = ObserverSpec("histogram", options={"raw_budget": budget})
    ref = run_torch(tao.HistogramObserver(), xs)
    assert_agree(run_ours(spec, xs), ref)


def test_histogram_constant_batches_match_torch():
    xs = [torch.full((5,), 2.0), torch.full((5,), 2.0), torch.tensor([-1.0, 3.0]),
          torch.full((4,), 0.5)]
    spec = ObserverSpec("histogram")
    assert_agree(run_ours(spec, xs), run_torch(tao.HistogramObserver(), xs))


def test_histogram_shards_merge_to_torch_on_the_concatenation():
    xs = batches((2, 8, 16), seed=8)
    spec = ObserverSpec("histogram", dtype="qint8", qscheme="per_tensor_symmetric",
                        options={"raw_budget": None})
    shards = []
    for part in (xs[:2], xs[2:3], xs[3:]):
        stats = init_stats(spec)
        for x in part:
            stats = observe(spec, stats, x)
        shards.append(stats)
    merged = merge(spec, shards[0], merge(spec, shards[1], shards[2]))
    assert merged.exact
    ref = run_torch(tao.HistogramObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric), xs)
    assert_agree(qparams(spec, merged), ref)


def test_histogram_folded_shards_merge_approximately():
    xs = batches((2, 8, 16), seed=9)
    spec = ObserverSpec("histogram")  # raw_budget 0: every shard folds at once
    a = observe(spec, observe(spec, init_stats(spec), xs[0]), xs[1])
    b = observe(spec, observe(spec, init_stats(spec), xs[2]), xs[3])
    merged = merge(spec, a, b)
    assert not merged.exact and merged.raw_elements == 0
    ours = qparams(spec, merged)
    ref_scale = run_torch(tao.HistogramObserver(), xs[:4])[0].item()
    assert abs(ours.scale[0] - ref_scale) <= 0.05 * ref_scale


def test_fixed_matches_torch():
    for ctor in (tao.default_fixed_qparams_range_0to1_observer,
                 tao.default_fixed_qparams_range_neg1to1_observer):
        spec = from_torch_observer(ctor)
        assert spec.kind == "fixed"
        stats = observe(spec, init_stats(spec), torch.randn(3))
        assert_agree(qparams(spec, stats), ctor().calculate_qparams())


# --- from_torch_observer --------------------------------------------------------------------------


@pytest.mark.parametrize("ctor", [
    tao.default_observer, tao.default_weight_observer, tao.default_histogram_observer,
    tao.default_per_channel_weight_observer, tao.per_channel_weight_observer_range_neg_127_to_127,
    tao.weight_observer_range_neg_127_to_127, tao.default_float_qparams_observer,
    tao.MovingAverageMinMaxObserver.with_args(averaging_constant=0.5, reduce_range=True),
    tao.MinMaxObserver.with_args(quant_min=0, quant_max=200, reduce_range=True).with_args(
        dtype=torch.quint8),
])
def test_from_torch_observer_reads_equivalent_specs(ctor):
    spec = from_torch_observer(ctor)
    ch_axis = getattr(ctor(), "ch_axis", None)
    xs = batches((6, 5, 4), seed=10, channel_axis=ch_axis)
    assert_agree(run_ours(spec, xs), run_torch(ctor(), xs))


def test_from_torch_observer_reads_instances_and_fake_quantize():
    from torch.ao.quantization import fake_quantize as fq

    inst = tao.MinMaxObserver(dtype=torch.qint8, quant_min=-50, quant_max=50)
    assert from_torch_observer(inst) == from_torch_observer(
        tao.MinMaxObserver.with_args(dtype=torch.qint8, quant_min=-50, quant_max=50))
    spec = from_torch_observer(fq.default_per_channel_weight_fake_quant)
    assert spec.kind == "moving_average_per_channel_minmax" and spec.option("fake_quant")
    assert from_torch_observer(fq.default_fused_act_fake_quant).kind == "moving_average_minmax"
    assert from_torch_observer(fq.default_fixed_qparams_range_0to1_fake_quant).kind == "fixed"
    assert from_torch_observer(tao.default_placeholder_observer).kind == "placeholder"
    dyn = from_torch_observer(tao.default_dynamic_quant_observer)
    assert dyn.is_dynamic and (dyn.quant_min, dyn.quant_max) == (0, 255)
    assert from_torch_observer(tao.NoopObserver).dtype == "float16"
    assert from_torch_observer(tao.ReuseInputObserver).option("reuse_input")


def test_from_torch_observer_matches_the_qconfig_reader():
    reader = pytest.importorskip("purequant.qconfig._torch_reader")
    observer_spec_from_torch = reader.observer_spec_from_torch

    for ctor in (tao.default_observer, tao.default_histogram_observer,
                 tao.default_per_channel_weight_observer, tao.default_dynamic_quant_observer,
                 tao.default_fixed_qparams_range_0to1_observer, tao.NoopObserver,
                 tao.MinMaxObserver.with_args(quant_min=0, quant_max=200, reduce_range=True)):
        assert from_torch_observer(ctor) == observer_spec_from_torch(ctor, where="test")


def test_from_torch_observer_refuses_what_it_cannot_read():
    with pytest.raises(ObserverConfigError, match="no purequant equivalent"):
        from_torch_observer(tao.RecordingObserver)
    with pytest.raises(ObserverConfigError, match="instantiate"):
        from_torch_observer(tao.FixedQParamsObserver)  # scale and zero_point are required
    with pytest.raises(ObserverConfigError, match="not a torch.ao observer"):
        from_torch_observer(torch.nn.ReLU)


# --- searches on the dyadic histogram ------------------------------------------------------------


def outlier_batches():
    g = torch.Generator().manual_seed(11)
    xs = [torch.randn(4000, generator=g) for _ in range(3)]
    xs[1][7] = 60.0  # one outlier far outside the bulk
    return xs


@pytest.mark.parametrize("kind", ["percentile", "entropy"])
@pytest.mark.parametrize("qscheme", ["per_tensor_affine", "per_tensor_symmetric"])
def test_searches_clip_outliers(kind, qscheme):
    xs = outlier_batches()
    dtype = "qint8" if qscheme.endswith("symmetric") else "quint8"
    spec = ObserverSpec(kind, dtype=dtype, qscheme=qscheme)
    wide = run_ours(ObserverSpec("minmax", dtype=dtype, qscheme=qscheme), xs)
    ours = run_ours(spec, xs)
    assert 0 < ours.scale[0] < 0.5 * wide.scale[0]
    assert ours.quant_min <= ours.zero_point[0] <= ours.quant_max


def round_trip_mse(q, x: torch.Tensor) -> float:
    s, z = q.scale[0], q.zero_point[0]
    return float(((torch.clamp(torch.round(x / s) + z, q.quant_min, q.quant_max) - z) * s - x)
                 .pow(2).mean())


@pytest.mark.parametrize("qscheme", ["per_tensor_affine", "per_tensor_symmetric"])
def test_mse_beats_minmax_on_heavy_tails(qscheme):
    g = torch.Generator().manual_seed(14)
    u = torch.rand(3, 5000, generator=g) - 0.5
    xs = list(-torch.sign(u) * torch.log1p(-2 * u.abs()) + 0.5)  # Laplace(0.5, 1) samples
    x = torch.cat(xs)
    # 4-bit ranges, where clipping the tails clearly pays off.
    dtype, qmin, qmax = ("qint8", -8, 7) if qscheme.endswith("symmetric") else ("quint8", 0, 15)
    kw = dict(dtype=dtype, qscheme=qscheme, quant_min=qmin, quant_max=qmax)
    minmax = run_ours(ObserverSpec("minmax", **kw), xs)
    ours = run_ours(ObserverSpec("mse", **kw), xs)
    assert ours.scale[0] < minmax.scale[0]
    assert round_trip_mse(ours, x) < 0.7 * round_trip_mse(minmax, x)


def test_percentile_100_both_tails_is_minmax():
    xs = outlier_batches()
    spec = ObserverSpec("percentile", options={"percentile": 100.0, "tails": "both"})
    assert run_ours(spec, xs) == run_ours(ObserverSpec("minmax"), xs)


def test_percentile_tracks_the_quantile():
    g = torch.Generator().manual_seed(12)
    x = torch.rand(100_000, generator=g) * 10.0  # uniform on [0, 10)
    spec = ObserverSpec("percentile", options={"percentile": 90.0, "tails": "both"})
    q = run_ours(spec, [x])
    # affine quint8 with min 0: scale = p90 / 255, and p90 of U[0, 10) is 9.
    assert abs(q.scale[0] * 255 - 9.0) < 0.02


# --- errors --------------------------------------------------------------------------------------

STAT_KINDS = [
    ObserverSpec("minmax"), ObserverSpec("moving_average_minmax"),
    ObserverSpec("per_channel_minmax", dtype="qint8", qscheme="per_channel_symmetric"),
    ObserverSpec("moving_average_per_channel_minmax", qscheme="per_channel_affine"),
    ObserverSpec("histogram"), ObserverSpec("percentile"), ObserverSpec("mse"),
    ObserverSpec("entropy"),
]


@pytest.mark.parametrize("spec", STAT_KINDS, ids=lambda s: s.kind)
def test_qparams_of_empty_stats_is_a_clear_error(spec):
    with pytest.raises(EmptyStatsError, match=r"conv1: .*before any tensor was observed"):
        qparams(spec, init_stats(spec), where="conv1")
    # An empty tensor observes nothing.
    with pytest.raises(EmptyStatsError):
        qparams(spec, observe(spec, init_stats(spec), torch.empty(0, 3)))


@pytest.mark.parametrize("spec", STAT_KINDS, ids=lambda s: s.kind)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_input_is_reported_at_observe(spec, bad):
    x = torch.randn(4, 3)
    x[2, 1] = bad
    stats = observe(spec, init_stats(spec), torch.randn(4, 3))
    with pytest.raises(NonFiniteError, match=r"relu_3: observed tensor of shape \(4, 3\) is not finite"):
        observe(spec, stats, x, where="relu_3")


def test_nonfinite_stats_are_reported_at_qparams():
    with pytest.raises(NonFiniteError, match="non-finite"):
        qparams(ObserverSpec("minmax"), RangeStats(float("nan"), 1.0))
    with pytest.raises(NonFiniteError):
        qparams(ObserverSpec("minmax"), RangeStats(0.0, float("inf")))


def test_moving_average_merge_refuses_two_non_empty():
    for spec in STAT_KINDS[1], STAT_KINDS[3]:
        a = observe(spec, init_stats(spec), torch.randn(4, 3))
        assert merge(spec, a, init_stats(spec)) == a == merge(spec, init_stats(spec), a)
        with pytest.raises(ObserverMergeError, match="moving average depends on the order"):
            merge(spec, a, a, where="fc")


def test_shape_and_type_errors():
    spec = STAT_KINDS[2]
    stats = observe(spec, init_stats(spec), torch.randn(4, 3))
    with pytest.raises(ObserverShapeError, match="5 channels .* statistics have 4"):
        observe(spec, stats, torch.randn(5, 3))
    with pytest.raises(ObserverMergeError):
        merge(spec, stats, observe(spec, init_stats(spec), torch.randn(5, 3)))
    with pytest.raises(StatsTypeError, match="expects ChannelRangeStats"):
        observe(spec, RangeStats(), torch.randn(4, 3))


@pytest.mark.parametrize("spec,match", [
    (ObserverSpec("minmax", qscheme="per_channel_affine"), "per-tensor"),
    (ObserverSpec("per_channel_minmax"), "per_channel qscheme"),
    (ObserverSpec("minmax", qscheme="per_tensor_symmetric", reduce_range=True), "reduce_range"),
    (ObserverSpec("minmax", quant_min=1, quant_max=10), "must contain 0"),
    (ObserverSpec("minmax", dtype="qint8", quant_min=-200, quant_max=100), "wider"),
    (ObserverSpec("minmax", dtype="float16"), "no integer range"),
    (ObserverSpec("histogram", is_dynamic=True), "static"),
    (ObserverSpec("moving_average_minmax", options={"averaging_constant": 0.0}), r"\(0, 1\]"),
    (ObserverSpec("percentile", options={"percentile": 20.0}), "percentile"),
    (ObserverSpec("entropy", options={"bins": 1000}), "power of two"),
    (ObserverSpec("fixed"), "scale > 0"),
])
def test_config_errors(spec, match):
    with pytest.raises(ObserverConfigError, match=match):
        init_stats(spec)


def test_placeholder_and_noop_have_no_qparams():
    for spec in (ObserverSpec("placeholder", is_dynamic=True), ObserverSpec("noop", dtype="float16")):
        stats = init_stats(spec)
        assert observe(spec, stats, torch.tensor([float("nan")])) is stats  # not even read
        assert merge(spec, stats, stats) == stats
        with pytest.raises(NoQParamsError, match=f"kind '{spec.kind}'"):
            qparams(spec, stats, where="x")


# --- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", STAT_KINDS + [ObserverSpec("histogram", options={"raw_budget": None})],
                         ids=lambda s: s.kind)
def test_stats_pickle_round_trip(spec):
    stats = init_stats(spec)
    for x in batches((4, 3), seed=13):
        stats = observe(spec, stats, x)
    again = pickle.loads(pickle.dumps(stats))
    assert again == stats
    assert qparams(spec, again) == qparams(spec, stats)


def test_observe_returns_same_stats_when_nothing_changes():
    spec = ObserverSpec("minmax")
    stats = observe(spec, init_stats(spec), torch.tensor([-2.0, 3.0]))
    assert observe(spec, stats, torch.tensor([0.0, 1.0])) is stats
    assert observe(spec, stats, torch.empty(0)) is stats


def test_autograd_inputs_are_observed_without_a_graph():
    spec = ObserverSpec("per_channel_minmax", qscheme="per_channel_affine")
    x = torch.randn(3, 4, requires_grad=True)
    stats = observe(spec, init_stats(spec), x)
    assert not stats.min_val.requires_grad


@pytest.mark.slow
@pytest.mark.parametrize("ctor", [tao.MinMaxObserver, tao.PerChannelMinMaxObserver.with_args(ch_axis=1)])
def test_observe_overhead_against_torch(ctor):
    """Benchmark (run with -m slow): per-call cost on a 1x64x56x56 activation."""
    import timeit

    x = torch.randn(1, 64, 56, 56)
    obs, spec = ctor(), from_torch_observer(ctor)
    stats = observe(spec, init_stats(spec), x)
    ref = min(timeit.repeat(lambda: obs(x), number=200, repeat=5))
    ours = min(timeit.repeat(lambda: observe(spec, stats, x), number=200, repeat=5))
    print(f"{spec.kind}: torch.ao {ref / 200 * 1e6:.1f} us, ours {ours / 200 * 1e6:.1f} us")
    assert ours < 1.5 * ref

"""module_from_spec rebuilds float modules whose constructors are not plain keyword signatures.

nn.LSTM/GRU/RNN take `(*args, **kwargs)`; the cells, Embedding, EmbeddingBag and
MultiheadAttention take named hyperparameters but hold optional tensors and derived state. For
each: spec -> module gives bit-identical outputs to the original on random inputs, holds the
params table's very tensors, and leaves them unwritten (values and `_version`). Then the zoo
`lstm` quantized statically (its LSTM stays float) saves and loads bit-identically.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

import purequant
from purequant.backends import quantized_engine
from purequant.errors import TraceError
from purequant.models import ZOO
from purequant.trace import instantiate, module_from_spec
from purequant.trace.specs import module_spec, params_table

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions"),
    pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max"),
]
torch.set_num_threads(1)

B, T, F, H = 3, 5, 4, 6  # batch, time steps, features, hidden size


def seq(m: nn.Module) -> torch.Tensor:
    return torch.randn((B, T, F) if m.batch_first else (T, B, F))


def rnn_inputs(m: nn.Module) -> list[tuple]:
    """Inputs without and with an initial state of the right shape."""
    directions = 2 if m.bidirectional else 1
    out = getattr(m, "proj_size", 0) or m.hidden_size
    h0 = torch.randn(m.num_layers * directions, B, out)
    hx = (h0, torch.randn(m.num_layers * directions, B, m.hidden_size)) if m.mode == "LSTM" else h0
    return [(seq(m),), (seq(m), hx)]


def cell_inputs(m: nn.Module) -> list[tuple]:
    h = torch.randn(B, m.hidden_size)
    hx = (h, torch.randn(B, m.hidden_size)) if isinstance(m, nn.LSTMCell) else h
    return [(torch.randn(B, m.input_size),), (torch.randn(B, m.input_size), hx)]


def mha_inputs(m: nn.Module) -> list[tuple]:
    def x(d: int, n: int) -> torch.Tensor:
        return torch.randn((B, n, d) if m.batch_first else (n, B, d))

    return [(x(m.embed_dim, T), x(m.kdim, T + 1), x(m.vdim, T + 1))]


def bag_inputs(m: nn.Module) -> list[tuple]:
    ids = torch.randint(0, m.num_embeddings, (7,))
    offsets = torch.tensor([0, 2, 7] if m.include_last_offset else [0, 2])
    weights = torch.rand(7) if m.mode == "sum" else None
    return [(ids, offsets, weights), (ids.view(1, 7),)]


def embedding_inputs(m: nn.Module) -> list[tuple]:
    return [(torch.randint(0, m.num_embeddings, (B, T)),)]


# name -> (constructor, inputs). Every module is built eval(); dropout is off in eval.
CASES = {
    "lstm": (lambda: nn.LSTM(F, H), rnn_inputs),
    "lstm_deep_bidirectional_batch_first": (
        lambda: nn.LSTM(F, H, num_layers=2, bidirectional=True, batch_first=True, dropout=0.3),
        rnn_inputs),
    "lstm_proj": (lambda: nn.LSTM(F, H, proj_size=3), rnn_inputs),
    "lstm_proj_bidirectional_deep_no_bias": (
        lambda: nn.LSTM(F, H, num_layers=3, proj_size=2, bidirectional=True, bias=False),
        rnn_inputs),
    "gru": (lambda: nn.GRU(F, H), rnn_inputs),
    "gru_deep_bidirectional_batch_first": (
        lambda: nn.GRU(F, H, num_layers=2, bidirectional=True, batch_first=True), rnn_inputs),
    "gru_no_bias": (lambda: nn.GRU(F, H, bias=False), rnn_inputs),
    "rnn_tanh": (lambda: nn.RNN(F, H), rnn_inputs),
    "rnn_relu_deep_bidirectional": (
        lambda: nn.RNN(F, H, num_layers=2, nonlinearity="relu", bidirectional=True), rnn_inputs),
    "rnn_relu_batch_first_no_bias": (
        lambda: nn.RNN(F, H, nonlinearity="relu", batch_first=True, bias=False), rnn_inputs),
    "lstm_cell": (lambda: nn.LSTMCell(F, H), cell_inputs),
    "lstm_cell_no_bias": (lambda: nn.LSTMCell(F, H, bias=False), cell_inputs),
    "gru_cell": (lambda: nn.GRUCell(F, H), cell_inputs),
    "rnn_cell_relu": (lambda: nn.RNNCell(F, H, nonlinearity="relu"), cell_inputs),
    "rnn_cell_tanh_no_bias": (lambda: nn.RNNCell(F, H, bias=False), cell_inputs),
    "embedding": (lambda: nn.Embedding(10, F, padding_idx=2), embedding_inputs),
    "embedding_bag_sum": (lambda: nn.EmbeddingBag(10, F, mode="sum"), bag_inputs),
    "embedding_bag_max_last_offset": (
        lambda: nn.EmbeddingBag(10, F, mode="max", include_last_offset=True, padding_idx=0),
        bag_inputs),
    "mha": (lambda: nn.MultiheadAttention(8, 2), mha_inputs),
    "mha_kv_dims_bias_kv_zero_attn": (
        lambda: nn.MultiheadAttention(8, 2, bias=False, add_bias_kv=True, add_zero_attn=True,
                                      kdim=5, vdim=3, batch_first=True), mha_inputs),
}


def leaves(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out if item is not None for t in leaves(item)]


def snapshot(m: nn.Module) -> dict[str, tuple[torch.Tensor, int]]:
    return {k: (t.detach().clone(), t._version) for k, t in m.state_dict(keep_vars=True).items()}


def assert_unchanged(m: nn.Module, before: dict) -> None:
    for k, t in m.state_dict(keep_vars=True).items():
        assert torch.equal(t, before[k][0]) and t._version == before[k][1], k


def rebuilt(m: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """`m` sitting at path "m", rebuilt from its spec and the params table."""
    params = params_table(nn.ModuleDict({"m": m}))
    return module_from_spec(module_spec(m, "m"), params), params


@pytest.fixture(params=sorted(CASES))
def case(request):
    torch.manual_seed(sum(map(ord, request.param)))
    build, inputs = CASES[request.param]
    m = build().eval()
    return m, inputs(m)


def check_rebuild(m: nn.Module, inputs: list[tuple]) -> nn.Module:
    before = snapshot(m)
    new, params = rebuilt(m)
    assert type(new) is type(m) and new is not m and not new.training
    assert repr(new) == repr(m)
    for name, tensor in new.state_dict(keep_vars=True).items():
        assert tensor is params[f"m.{name}"], name  # the table's object, not a copy
    if isinstance(m, nn.RNNBase):
        # What the kernel reads, before any forward (whose own refresh would hide a stale list;
        # TorchScript and __getstate__ paths have none): the installed tensors, not meta ones.
        assert len(new._flat_weights) == len(new._flat_weights_names)
        for name, weight in zip(new._flat_weights_names, new._flat_weights, strict=True):
            assert weight is params[f"m.{name}"], name
    with torch.no_grad():
        for args in inputs:
            for a, b in zip(leaves(m(*args)), leaves(new(*args)), strict=True):
                assert torch.equal(a, b)
    assert_unchanged(m, before)
    return new


def test_rebuilt_module_gives_bit_identical_outputs(case):
    m, inputs = case
    new = check_rebuild(m, inputs)
    assert new.state_dict().keys() == m.state_dict().keys()


@pytest.fixture
def without_overloads(monkeypatch):
    """As on Python 3.10, where typing.get_overloads does not exist: the MRO path."""
    instantiate._constructor.cache_clear()
    monkeypatch.setattr(instantiate, "_get_overloads", lambda func: ())
    yield
    instantiate._constructor.cache_clear()


@pytest.mark.parametrize("name", ["lstm_proj_bidirectional_deep_no_bias",
                                  "gru_deep_bidirectional_batch_first",
                                  "rnn_relu_deep_bidirectional", "rnn_tanh"])
def test_rnns_rebuild_through_their_base_without_overloads(name, without_overloads):
    torch.manual_seed(0)
    build, inputs = CASES[name]
    m = build().eval()
    assert instantiate._constructor(type(m))[1] is nn.RNNBase
    new = check_rebuild(m, inputs(m))
    assert getattr(new, "nonlinearity", None) == getattr(m, "nonlinearity", None)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.get_overloads is 3.11+")
def test_constructor_signatures_come_from_overloads():
    signature, base = instantiate._constructor(nn.LSTM)
    assert base is None and "proj_size" in signature.parameters
    assert "mode" not in signature.parameters
    assert "nonlinearity" in instantiate._constructor(nn.RNN)[0].parameters
    assert instantiate._constructor(nn.Identity)[1] is None  # (*args, **kwargs), nothing to name


def test_a_spec_lacking_a_hyperparameter_is_a_clear_error():
    m = nn.LSTM(F, H)
    spec = module_spec(m, "m")
    spec = type(spec)(spec.type, spec.attrs.remove("input_size"), spec.params)
    with pytest.raises(TraceError, match="needs input_size"):
        module_from_spec(spec, params_table(nn.ModuleDict({"m": m})))


def test_a_float64_lstm_keeps_its_tensors_and_dtype():
    m = nn.LSTM(F, H, num_layers=2).double().eval()
    x = torch.randn(T, B, F, dtype=torch.float64)
    new = check_rebuild(m, [(x,)])
    assert all(w.dtype == torch.float64 for w in new._flat_weights)


# ------------------------------------------------------------------ save and load
def run(gm: nn.Module, inputs: tuple) -> torch.Tensor:
    with torch.no_grad(), quantized_engine("x86"):
        return gm(*inputs)


QUANTIZE = {
    "static": lambda model, entry: purequant.quantize(
        model, entry.example_inputs(), list(entry.calibration_batches(2))),
    "dynamic_lstm_skipped": lambda model, entry: purequant.quantize_dynamic(
        model, entry.example_inputs(),
        {"": tq.default_dynamic_qconfig, "module_name": [("lstm", None)]}),
}


@pytest.mark.parametrize("mode", sorted(QUANTIZE))
def test_zoo_lstm_with_a_float_lstm_saves_and_loads_bit_identically(mode, tmp_path):
    entry = ZOO["lstm"]
    model = entry.build().eval()
    before = snapshot(model)
    q = QUANTIZE[mode](model, entry)
    assert type(q.get_submodule("lstm")) is nn.LSTM  # left float
    loaded = purequant.load(purequant.save(q, tmp_path / "lstm.pq"))
    assert type(loaded.get_submodule("lstm")) is nn.LSTM
    for batch in (entry.example_inputs(2), next(entry.calibration_batches(1, batch=3))):
        assert torch.equal(run(q, batch), run(loaded, batch))
        assert torch.equal(run(q, batch), run(q, batch))
    assert_unchanged(model, before)
    again = tmp_path / "again.pq"
    assert purequant.save(loaded, again).read_bytes() == (tmp_path / "lstm.pq").read_bytes()

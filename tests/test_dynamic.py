"""Dynamic int8, fp16 and weight-only quantization end to end, against torch.ao.

Baselines: torch.ao's eager `quantize_dynamic` and `prepare_fx`/`convert_fx` with the same
qconfigs, on the zoo's lstm, mlp and bert and on small RNN / embedding models.

The int8 dynamic kernels take a `reduce_range` flag. purequant passes the dynamic activation
spec's (False in the default qconfig, as torch.ao's observer says); torch.ao ignores its
observer and passes True on x86/fbgemm. So the like-for-like comparison (`PARITY`: the same
qconfig with reduce_range=True) must agree with torch.ao to >= 30 dB (it is bit-identical),
and the default must be at least as close to float as torch.ao (it is 3-6 dB closer: 8-bit
instead of 7-bit activations).
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter

import attrs
import pytest
import torch
import torch.ao.quantization as tq
from pyrsistent import pmap
from torch import nn
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import purequant
from purequant.backends import quantized_engine
from purequant.models import ZOO
from purequant.qconfig import (
    QConfig,
    QConfigSpec,
    default_dynamic_qconfig_spec,
    embedding_qconfig_spec,
    float16_qconfig_spec,
)
from purequant.qconfig.defaults import DEFAULT_DYNAMIC, DYNAMIC_MODULES, PER_CHANNEL_DYNAMIC

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.ao")

Q = "torch.ops.quantized."
# The dynamic RNN entry points are torch functions, not torch.ops.quantized ops.
RNN_OPS = ("torch.quantized_lstm", "torch.quantized_gru")
ZOO_MODELS = ("lstm", "mlp", "bert")
DYNAMIC_TYPES = (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell)


# ------------------------------------------------------------------------------ helpers
def sqnr(ref: torch.Tensor, x: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of x against ref, in dB (inf when equal)."""
    noise = (ref.float() - x.float()).pow(2).mean()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(ref.float().pow(2).mean() / noise))


def parity_spec(per_channel: bool = False) -> QConfigSpec:
    """The default dynamic spec with the kernel flag torch.ao passes on x86 (reduce_range)."""
    base = PER_CHANNEL_DYNAMIC if per_channel else DEFAULT_DYNAMIC
    qc = QConfig(attrs.evolve(base.activation, reduce_range=True), base.weight, name="parity")
    return QConfigSpec(object_type=pmap(dict.fromkeys(DYNAMIC_MODULES, qc)))


def run(model: nn.Module, inputs: tuple) -> torch.Tensor:
    with quantized_engine("x86"), torch.no_grad():
        out = model(*inputs)
    return out[0] if isinstance(out, tuple) else out


def ops(module: torch.fx.GraphModule) -> Counter:
    """Quantized ops in the graph the module runs (prepacks folded away), by target."""
    graph = purequant.quantized_record(module).folded_graph
    return Counter(n.target for n in graph.node_list()
                   if n.op == "call_function" and (n.target.startswith(Q) or n.target in RNN_OPS))


def ao_dynamic(model: nn.Module, qconfig_spec: dict | set | None = None, dtype=torch.qint8) -> nn.Module:
    return tq.quantize_dynamic(copy.deepcopy(model), qconfig_spec, dtype=dtype)


def ao_modules(model: nn.Module) -> Counter:
    """torch.ao's dynamic quantized modules in its result, by class name (`Linear`, `LSTM`)."""
    return Counter(type(m).__name__ for m in model.modules()
                   if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic"))


def snapshot(model: nn.Module) -> dict:
    return {k: (v.clone(), v._version) for k, v in model.state_dict(keep_vars=True).items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k][0], b[k][0]) and a[k][1] == b[k][1] for k in a)


@pytest.fixture(scope="module")
def zoo():
    """name -> (model, example inputs, evaluation inputs, float output)."""
    out = {}
    for name in ZOO_MODELS:
        entry = ZOO[name]
        model, batch = entry.build(), entry.example_inputs(8)
        out[name] = (model, entry.example_inputs(2), batch, run(model, batch))
    return out


# ------------------------------------------------------------------ zoo: int8 and fp16
# Dynamic linears per model: lstm's classifier, mlp's three (two fused with relu), bert's 26.
LINEARS = {"lstm": 1, "mlp": 3, "bert": 26}


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_int8_default_at_least_as_accurate_as_torchao(zoo, name):
    model, example, batch, ref = zoo[name]
    q = purequant.quantize_dynamic(model, example)
    ao = ao_dynamic(model)
    ours, theirs = sqnr(ref, run(q, batch)), sqnr(ref, run(ao, batch))
    assert ours >= theirs - 0.5, (ours, theirs)
    assert sqnr(run(ao, batch), run(q, batch)) >= 25  # bert: torch.ao is itself 28.8 dB from float
    found = ops(q)
    assert found[Q + "linear_dynamic"] + found[Q + "linear_relu_dynamic"] == LINEARS[name]
    assert ao_modules(ao)["Linear"] == LINEARS[name]
    assert found["torch.quantized_lstm"] == (name == "lstm") == ao_modules(ao)["LSTM"]


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_int8_parity_with_torchao(zoo, name, per_channel):
    model, example, batch, ref = zoo[name]
    q = purequant.quantize_dynamic(model, example, parity_spec(per_channel))
    qc = tq.per_channel_dynamic_qconfig if per_channel else tq.default_dynamic_qconfig
    ao = ao_dynamic(model, dict.fromkeys(DYNAMIC_TYPES, qc))
    ours, theirs = run(q, batch), run(ao, batch)
    assert sqnr(theirs, ours) >= 30
    assert sqnr(ref, ours) >= sqnr(ref, theirs) - 0.5


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_fp16(zoo, name):
    model, example, batch, ref = zoo[name]
    q = purequant.quantize_dynamic(model, example, dtype=torch.float16)
    ao = ao_dynamic(model, dtype=torch.float16)
    ours, theirs = run(q, batch), run(ao, batch)
    assert sqnr(theirs, ours) >= 30
    assert sqnr(ref, ours) >= sqnr(ref, theirs) - 0.5
    found = ops(q)
    assert found[Q + "linear_dynamic_fp16"] + found[Q + "linear_relu_dynamic_fp16"] == LINEARS[name]
    assert found[Q + "linear_dynamic"] == 0 and found["torch.quantized_lstm"] == (name == "lstm")


def fx_mapping(name: str, qc) -> tq.QConfigMapping:
    # torch.ao refuses object-type entries for Linear alone where it fuses Linear + ReLU (mlp).
    if name == "mlp":
        return tq.QConfigMapping().set_global(qc)
    return tq.QConfigMapping().set_object_type(nn.Linear, qc).set_object_type(nn.LSTM, qc)


@pytest.mark.parametrize("dtype", ["int8", "fp16"])
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_same_mapping_as_torchao_fx(zoo, name, dtype):
    """One torch.ao QConfigMapping, given to prepare_fx/convert_fx and to purequant."""
    model, example, batch, ref = zoo[name]
    qc = tq.float16_dynamic_qconfig if dtype == "fp16" else tq.default_dynamic_qconfig
    mapping = fx_mapping(name, qc)
    fx = convert_fx(prepare_fx(copy.deepcopy(model), mapping, example))
    ours = purequant.quantize_dynamic(model, example, mapping)
    ours_out, fx_out = run(ours, batch), run(fx, batch)
    assert sqnr(ref, ours_out) >= sqnr(ref, fx_out) - 0.5
    # fp16 is exact; int8 differs by reduce_range only (see the module docstring).
    assert sqnr(fx_out, ours_out) >= (30 if dtype == "fp16" else 25)
    assert sum(ops(ours).values()) == LINEARS[name] + (name == "lstm")


class Functional(nn.Module):
    """F.linear (+ relu) on parameters, one weight read twice (with and without its bias)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w, self.b = nn.Parameter(torch.randn(16, 8)), nn.Parameter(torch.randn(16))
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.relu(nn.functional.linear(x, self.w, self.b))) + nn.functional.linear(x, self.w)[:, :4]


@pytest.mark.parametrize("dtype", ["int8", "fp16"])
def test_functional_linear_matches_torchao_fx(dtype):
    model, x = Functional().eval(), (torch.randn(6, 8),)
    qc = tq.float16_dynamic_qconfig if dtype == "fp16" else tq.default_dynamic_qconfig
    mapping = tq.QConfigMapping().set_global(qc)
    fx = convert_fx(prepare_fx(copy.deepcopy(model), mapping, x))
    ours = purequant.quantize_dynamic(model, x, mapping)
    ref, ours_out, fx_out = run(model, x), run(ours, x), run(fx, x)
    assert sqnr(fx_out, ours_out) >= 30 and sqnr(ref, ours_out) >= sqnr(ref, fx_out) - 0.5
    suffix = "_fp16" if dtype == "fp16" else ""
    assert ops(ours) == Counter({f"{Q}linear_relu_dynamic{suffix}": 1, f"{Q}linear_dynamic{suffix}": 2})


# -------------------------------------------------------------------- skipping and purity
def test_skipped_submodule_stays_float(zoo):
    model, example, batch, ref = zoo["lstm"]
    q = purequant.quantize_dynamic(model, example, {"": tq.default_dynamic_qconfig, "module_name": [("lstm", None)]})
    found = ops(q)
    assert found == Counter({Q + "linear_dynamic": 1})
    graph = purequant.quantized_record(q).folded_graph
    lstm = [n for n in graph.node_list() if n.op == "call_module" and n.target == "lstm"]
    assert len(lstm) == 1 and isinstance(q.get_submodule("lstm"), nn.LSTM)
    # torch.ao refuses a dynamic qconfig on an Embedding; purequant's patterns leave it float.
    ao = ao_dynamic(model, {"": tq.default_dynamic_qconfig, "lstm": None, "embedding": None})
    assert type(ao.lstm) is nn.LSTM
    assert sqnr(ref, run(q, batch)) >= sqnr(ref, run(ao, batch)) - 0.5


def test_global_qconfig_leaves_other_ops_float(zoo):
    """A global dynamic qconfig reaches every op; only linear and the RNNs have dynamic
    kernels, so embeddings, layer norms, matmuls and the rest stay float (no observer either)."""
    model, example, batch, ref = zoo["bert"]
    q = purequant.quantize_dynamic(model, example, {"": DEFAULT_DYNAMIC})
    assert ops(q) == Counter({Q + "linear_dynamic": LINEARS["bert"]})
    graph = purequant.quantized_record(q).folded_graph
    assert not any(n.target in ("torch.quantize_per_tensor", "torch.dequantize") for n in graph.node_list())


@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16])
def test_model_unchanged_and_weights_packed_once(zoo, dtype):
    model, example, batch, _ = zoo["lstm"]
    before = snapshot(model)
    q = purequant.quantize_dynamic(model, example, dtype=dtype)
    assert same(before, snapshot(model)) and type(model.lstm) is nn.LSTM
    rec = purequant.quantized_record(q)
    targets = {n.target for n in rec.folded_graph.node_list()}
    # Every quantize, prepack and cell-params node was folded into a constant.
    assert not {t for t in targets if "prepack" in t or "cell_params" in t or t.startswith("torch.quantize_per")}
    folded = {f.target for f in rec.records["fold_weights"].folds}
    assert {"torch.ops.quantized.make_quantized_cell_params_" + ("dynamic" if dtype == torch.qint8 else "fp16")} <= folded
    assert rec.records["fold_weights"].engine == "x86"
    assert torch.equal(run(q, batch), run(q, batch))


# ------------------------------------------------------------------------------ RNN family
class Recurrent(nn.Module):
    """One of the dynamic RNN modules on a sequence (cells: on its first step); the hidden
    state is given as extra inputs or left to its default (zeros)."""

    def __init__(self, kind: str, given: bool = False, **kw) -> None:
        super().__init__()
        self.kind, self.given = kind, given
        self.rnn = getattr(nn, kind)(8, 16, **kw)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None, c: torch.Tensor | None = None) -> torch.Tensor:
        # `given` is a Python constant, so torch.fx traces one branch.
        hx = ((h, c) if self.kind.startswith("LSTM") else h) if self.given else None
        if self.kind.endswith("Cell"):
            out = self.rnn(x[:, 0], hx) if self.given else self.rnn(x[:, 0])
            return torch.cat(out, 1) if self.kind == "LSTMCell" else out
        out, hn = self.rnn(x, hx) if self.given else self.rnn(x)
        hn = torch.cat(hn, 0) if self.kind == "LSTM" else hn
        return torch.cat([out.flatten(1), hn.transpose(0, 1).flatten(1)], 1) if self.rnn.batch_first else out


RNN_CASES = {
    "lstm": ("LSTM", {}, False),
    "lstm_deep_bidirectional_batch_first": ("LSTM", {"num_layers": 2, "bidirectional": True, "batch_first": True}, False),
    "lstm_given_hidden": ("LSTM", {"batch_first": True}, True),
    "gru": ("GRU", {"num_layers": 2}, False),
    "gru_bidirectional_given_hidden": ("GRU", {"bidirectional": True, "batch_first": True}, True),
    "lstm_cell": ("LSTMCell", {}, False),
    "lstm_cell_given_hidden": ("LSTMCell", {}, True),
    "gru_cell": ("GRUCell", {}, False),
    "rnn_cell_tanh": ("RNNCell", {}, False),
    "rnn_cell_relu": ("RNNCell", {"nonlinearity": "relu"}, True),
}
KERNELS = {
    "LSTM": "torch.quantized_lstm", "GRU": "torch.quantized_gru",
    "LSTMCell": Q + "quantized_lstm_cell_dynamic", "GRUCell": Q + "quantized_gru_cell_dynamic",
    "RNNCell": Q + "quantized_rnn_tanh_cell_dynamic",
}


def _recurrent(case: str, **extra) -> tuple[nn.Module, tuple, tuple]:
    """The model, example inputs (batch 2) and evaluation inputs (batch 6)."""
    kind, kw, given = RNN_CASES[case]
    torch.manual_seed(0)
    model = Recurrent(kind, given, **kw, **extra).eval()
    cell, batch_first = kind.endswith("Cell"), kw.get("batch_first", False)

    def inputs(b: int) -> tuple:
        x = torch.randn(b, 5, 8) if cell or batch_first else torch.randn(5, b, 8)
        dirs = 2 if kw.get("bidirectional") else 1
        h = torch.randn(b, 16) if cell else torch.randn(kw.get("num_layers", 1) * dirs, b, 16)
        hidden = (h, torch.randn_like(h)) if kind.startswith("LSTM") else (h,)
        return (x, *hidden) if given else (x,)

    return model, inputs(2), inputs(6)


@pytest.mark.parametrize("dtype", ["int8", "fp16"])
@pytest.mark.parametrize("case", sorted(RNN_CASES))
def test_rnn_family_matches_torchao(case, dtype):
    model, example, batch = _recurrent(case)
    if dtype == "fp16":
        q, ao = purequant.quantize_dynamic(model, example, dtype=torch.float16), ao_dynamic(model, dtype=torch.float16)
    else:
        q, ao = purequant.quantize_dynamic(model, example, parity_spec()), ao_dynamic(model)
    ref, ours, theirs = run(model, batch), run(q, batch), run(ao, batch)
    assert sqnr(theirs, ours) >= 30
    assert sqnr(ref, ours) >= sqnr(ref, theirs) - 0.5
    kernel = Q + "quantized_rnn_relu_cell_dynamic" if case == "rnn_cell_relu" else KERNELS[model.kind]
    assert ops(q) == Counter({kernel: 1})


def test_rnn_default_int8_at_least_as_accurate():
    model, example, batch = _recurrent("lstm_deep_bidirectional_batch_first")
    q = purequant.quantize_dynamic(model, example)
    ref = run(model, batch)
    assert sqnr(ref, run(q, batch)) >= sqnr(ref, run(ao_dynamic(model), batch)) - 0.5


class GruHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(8, 16, bias=False)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0])


def test_rnn_without_bias_stays_float_with_a_reason():
    torch.manual_seed(0)
    model, x = GruHead().eval(), torch.randn(5, 2, 8)
    q = purequant.quantize_dynamic(model, (x,))
    assert ops(q) == Counter({Q + "linear_dynamic": 1})
    assert "bias=False" in purequant.quantized_record(q).records["lower"].skip_reasons()["rnn"]
    assert type(q.get_submodule("rnn")) is nn.GRU


# --------------------------------------------------------------------- weight-only embeddings
class Bags(nn.Module):
    """A token Embedding and an EmbeddingBag (offsets, per-sample weights) into a Linear."""

    def __init__(self, mode: str = "sum") -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.bag = nn.EmbeddingBag(60, 16, mode=mode)
        self.fc = nn.Linear(16, 4)

    def forward(self, tokens, indices, offsets, weights):
        bag = self.bag(indices, offsets, weights if self.bag.mode == "sum" else None)
        return self.fc(self.emb(tokens).mean(1) + bag)


def _bags(mode: str = "sum") -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    inputs = (torch.randint(0, 50, (4, 7)), torch.randint(0, 60, (20,)), torch.tensor([0, 3, 9, 15]), torch.rand(20))
    return Bags(mode).eval(), inputs


AO_EMBEDDING = {
    8: {nn.Embedding: tq.float_qparams_weight_only_qconfig, nn.EmbeddingBag: tq.float_qparams_weight_only_qconfig},
    4: {nn.EmbeddingBag: tq.float_qparams_weight_only_qconfig_4bit},
}
EMBEDDING_OPS = {
    8: Counter({Q + "embedding_byte": 1, Q + "embedding_bag_byte_rowwise_offsets": 1}),
    4: Counter({Q + "embedding_bag_4bit_rowwise_offsets": 1}),
}


@pytest.mark.parametrize("reference", [False, True], ids=["native", "reference"])
@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_embeddings_match_torchao(bits, reference):
    model, inputs = _bags()
    q = purequant.convert(purequant.prepare(model, embedding_qconfig_spec(bits), inputs), reference=reference)
    ao = ao_dynamic(model, AO_EMBEDDING[bits])
    ref, ours, theirs = run(model, inputs), run(q, inputs), run(ao, inputs)
    assert sqnr(theirs, ours) >= 30
    assert sqnr(ref, ours) >= sqnr(ref, theirs) - 0.5
    if not reference:
        assert ops(q) == EMBEDDING_OPS[bits]
        # The bag's packed rows are a plain uint8 tensor, not an engine-bound object.
        rec = purequant.quantized_record(q)
        rows = [f for f in rec.records["fold_weights"].folds if f.target.endswith(("byte_prepack", "4bit_prepack"))]
        assert len(rows) == 1 and getattr_path(q, rows[0].path).dtype == torch.uint8
    else:
        assert ops(q) == Counter()


def getattr_path(module: nn.Module, path: str):
    obj = module
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def test_embedding_4bit_plain_embedding():
    """nn.Embedding with 4-bit rows, asked for explicitly (torch.ao's eager quantize_dynamic
    builds an 8-bit module from this qconfig, which then fails to run: no torch.ao baseline)."""
    model, inputs = _bags()
    qc = embedding_qconfig_spec(4).object_type["torch.nn.EmbeddingBag"]
    prepared = purequant.prepare(model, {"object_type": [(nn.Embedding, qc)]}, inputs)
    q, reference = purequant.convert(prepared), purequant.convert(prepared, reference=True)
    assert ops(q) == Counter({Q + "embedding_4bit": 1})
    assert sqnr(run(reference, inputs), run(q, inputs)) >= 30
    assert sqnr(run(model, inputs), run(q, inputs)) >= 20


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_bag_modes_the_kernels_lack_stay_float(mode):
    """The quantized bag kernels always sum (torch.ao's quantized EmbeddingBag silently sums
    for mean and max); native lowering leaves such a bag float, the reference lowers it."""
    model, inputs = _bags(mode)
    prepared = purequant.prepare(model, embedding_qconfig_spec(8), inputs)
    native, reference = purequant.convert(prepared), purequant.convert(prepared, reference=True)
    skips = purequant.quantized_record(native).records["lower"].skip_reasons()
    assert "only sum" in skips["bag"]
    ref = run(model, inputs)
    assert sqnr(ref, run(native, inputs)) >= 35 and sqnr(ref, run(reference, inputs)) >= 35
    assert sqnr(ref, run(ao_dynamic(model, AO_EMBEDDING[8]), inputs)) < 10  # torch.ao's sum


def test_dynamic_and_weight_only_together(zoo):
    """lstm with int8 dynamic Linear/LSTM and an 8-bit weight-only Embedding, in one spec."""
    model, example, batch, ref = zoo["lstm"]
    qc = tq.default_dynamic_qconfig
    spec = {"object_type": [(nn.Linear, qc), (nn.LSTM, qc), (nn.Embedding, tq.float_qparams_weight_only_qconfig)]}
    q = purequant.quantize_dynamic(model, example, spec)
    assert ops(q) == Counter({Q + "linear_dynamic": 1, "torch.quantized_lstm": 1, Q + "embedding_byte": 1})
    ao = ao_dynamic(model, {nn.Linear: qc, nn.LSTM: qc, nn.Embedding: tq.float_qparams_weight_only_qconfig})
    assert sqnr(ref, run(q, batch)) >= sqnr(ref, run(ao, batch)) - 0.5


# ------------------------------------------------------------------------ reference lowering
@pytest.mark.parametrize("dtype", ["int8", "fp16"])
def test_reference_dynamic_linear_tracks_native(zoo, dtype):
    model, example, batch, ref = zoo["mlp"]
    spec = float16_qconfig_spec() if dtype == "fp16" else default_dynamic_qconfig_spec()
    prepared = purequant.prepare(model, spec, example)
    native, reference = purequant.convert(prepared), purequant.convert(prepared, reference=True)
    assert ops(reference) == Counter()
    graph = purequant.quantized_record(reference).folded_graph
    linears = [n for n in graph.node_list() if n.target == "torch.nn.functional.linear"]
    assert len(linears) == 3
    assert sqnr(run(native, batch), run(reference, batch)) >= (60 if dtype == "fp16" else 30)
    assert sqnr(ref, run(reference, batch)) >= sqnr(ref, run(native, batch)) - 1.0
    # int8 weights are kept as int8 and fp16 weights as half; both widen as they run.
    rec = purequant.quantized_record(reference)
    if dtype == "fp16":
        new = rec.records["lower"].new_params
        assert len(new) == 3 and all(rec.params[p].dtype == torch.float16 for p in new)
    else:
        assert {getattr_path(reference, f.path).dtype for f in rec.records["fold_weights"].folds} == {torch.int8}

"""Rules for dynamic quantization (int8 or fp16 weights) and weight-only embeddings.

Dynamic: activations stay float in the graph and the kernel quantizes them as it runs, so a
dynamic match has no activation observer and no output qparams; its output is float.

* linear (+ relu): `quantized.linear_dynamic(x, linear_prepack(w_q, b), reduce_range)`, or
  `linear_dynamic_fp16(x, linear_prepack_fp16(w, b))`; a fused relu picks the
  `linear_relu_dynamic*` kernel. `reduce_range` is the dynamic activation spec's (torch.ao
  ignores its observer and passes True on x86/fbgemm: set it in the spec to match).
  Reference: x quantized and dequantized with qparams chosen at run time (decomposed
  `choose_qparams`), the weight quantized and dequantized (int8 kept), float `F.linear`; fp16
  keeps a half-precision weight and widens it as it runs.
* LSTM / GRU: per layer and direction, `make_quantized_cell_params_dynamic` (or `_fp16`) over
  the packed weights, then `torch.quantized_lstm` / `torch.quantized_gru` as torch.ao's dynamic
  modules call them. Cells: `quantized.quantized_{lstm,gru,rnn_tanh,rnn_relu}_cell_dynamic`.

Weight-only (float in, float out; 8- or 4-bit rows with a float scale and offset each):

* Embedding: `embedding_byte` / `embedding_4bit` on `embedding_bag_prepack(w_q)`.
* EmbeddingBag (mode "sum": the kernels sum whatever mode they are given):
  `embedding_bag_{byte,4bit}_rowwise_offsets` on `embedding_bag_{byte,4bit}_prepack(w)`
  when the weight observer is per-row min/max (those prepacks compute exactly its qparams, and
  give a plain uint8 tensor, no engine-bound object); other observers' qparams go through
  `embedding_bag_prepack(w_q)` and `embedding_bag_byte` / `embedding_bag_4bit`.

Every quantize, prepack and cell-params node reads parameters only, so `fold_weights` runs it
once: the model holds packed weights and never rebuilds them per call.
"""

from __future__ import annotations

from typing import Any

import torch
from attrs import frozen

from ..ir import Node, Ref, Sym
from ..ir.module_spec import ModuleSpec
from ..ir.names import sanitize
from .dialect import NATIVE
from .operands import Weighted, arg, bias_ref, make_weight, weight, weighted
from .sweep import CannotLower, Sweep

Q, QD = "torch.ops.quantized.", "torch.ops.quantized_decomposed."
NN, F = "torch.nn.", "torch.nn.functional."
_RNNS = frozenset({"LSTM", "GRU"})
_CELLS = frozenset({"LSTMCell", "GRUCell", "RNNCell"})
_EMBEDDING_BITS = {"quint8": 8, "quint4x2": 4}


def _dynamic_dtype(m: Any) -> str:
    """"int8" or "fp16": what the kernels quantize weights (and int8 activations) to."""
    act = m.qconfig.activation
    if act.dtype == "float16":
        return "fp16"
    if act.dtype == "quint8":
        return "int8"
    raise CannotLower(f"no dynamic kernel takes {act.dtype} activations (quint8 or float16)")


def _param_path(sw: Sweep, where: Any, what: str) -> str:
    """The params path of a module's parameter (`where` is one) or of a functional op's."""
    if isinstance(where, str):
        return where
    src = sw.source(where)
    if src is None or src.op != "get_attr" or src.target not in sw.params:
        raise CannotLower(f"{what} {where!r} is not a parameter (computed weights stay float)")
    return src.target


def _prepack(sw: Sweep, op: str, w: Ref, b: Any, prefix: str) -> Ref:
    # Keyed like rules_weighted's prepacks, so a weight read by two linears is packed once.
    return sw.cached((Q + op, w, b, ()), lambda: sw.call(Q + op, w, b, prefix=prefix, kernel=True))


# ------------------------------------------------------------------------------ linear
@frozen
class _DynamicLinear:
    """A dynamic linear match, read: the op, "int8"/"fp16", the weight's qparams or path."""

    op: Weighted
    dtype: str
    weight: Any
    reduce_range: bool


def _dynamic_linear(sw: Sweep, m: Any) -> _DynamicLinear:
    op = weighted(sw, m)
    if op.kind != "linear":
        raise CannotLower(f"no dynamic {op.kind} kernel")
    if op.post not in ((), ("relu",)):
        raise CannotLower(f"no dynamic linear kernel fused with {', '.join(map(str, op.post))}")
    if type(op.x) is not Ref:
        raise CannotLower("the input is not a graph value")
    dtype = _dynamic_dtype(m)
    # int8 weights are observed from the parameter; fp16 weights are only rounded.
    w = weight(sw, m, op.weight) if dtype == "int8" else _param_path(sw, op.weight, "weight")
    return _DynamicLinear(op, dtype, w, bool(m.qconfig.activation.reduce_range))


def native_dynamic_linear(sw: Sweep, m: Any) -> Ref:
    """Linear (+ relu) with int8 or fp16 weights; the kernel quantizes x as it runs."""
    d = _dynamic_linear(sw, m)
    b = bias_ref(sw, d.op.bias)
    relu = "_relu" if d.op.post else ""
    if d.dtype == "int8":
        w = sw.dialect.quantize_weight(sw, make_weight(sw, d.weight))
        packed = _prepack(sw, "linear_prepack", w, b, f"{m.anchor}_packed")
        kernel, extra = f"linear{relu}_dynamic", (d.reduce_range,)
    else:
        packed = _prepack(sw, "linear_prepack_fp16", sw.get_attr(d.weight), b, f"{m.anchor}_packed")
        kernel, extra = f"linear{relu}_dynamic_fp16", ()
    return sw.call(Q + kernel, sw.load_float(d.op.x.id), packed, *extra, nid=m.root, kernel=True)


def _dynamic_qdq(sw: Sweep, x: Ref, reduce_range: bool, prefix: str) -> Ref:
    """x quantized to quint8 with qparams chosen from x itself, and back (the reference of
    what the dynamic kernels do inside); reduce_range halves the range as fbgemm does."""
    rng = (0, 127 if reduce_range else 255, Sym("torch.uint8"))
    qp = sw.call(QD + "choose_qparams.tensor", x, rng[0], rng[1], torch.finfo(torch.float32).eps, rng[2],
                 prefix=f"{prefix}_qparams")
    scale = sw.call("operator.getitem", qp, 0, prefix=f"{prefix}_scale")
    zp = sw.call("operator.getitem", qp, 1, prefix=f"{prefix}_zero_point")
    q = sw.call(QD + "quantize_per_tensor.tensor", x, scale, zp, *rng, prefix=f"{prefix}_q")
    return sw.call(QD + "dequantize_per_tensor.tensor", q, scale, zp, *rng, prefix=f"{prefix}_dq")


def _half_weight(sw: Sweep, path: str) -> Ref:
    """The weight stored in half precision (a new params entry), widened to float as it runs."""
    half = sw.cached(("fp16", path), lambda: sw.new_param(f"{path}_fp16", sw.params[path].detach().half()))
    return sw.emit("call_method", "float", (half,), prefix=f"{sanitize(path)}_widened")


def reference_dynamic_linear(sw: Sweep, m: Any) -> Ref:
    """Dynamic linear as float ops: quantize -> dequantize around a float `F.linear`."""
    d = _dynamic_linear(sw, m)
    b = bias_ref(sw, d.op.bias)
    x = sw.load_float(d.op.x.id)
    if d.dtype == "int8":
        w = sw.dialect.weight_float(sw, make_weight(sw, d.weight))
        x = _dynamic_qdq(sw, x, d.reduce_range, f"{m.anchor}_input")
    else:
        w = _half_weight(sw, d.weight)
    y = sw.call(F + "linear", x, w, b, nid=None if d.op.post else m.root, kernel=True)
    return sw.call(F + "relu", y, nid=m.root, kernel=True) if d.op.post else y


# ------------------------------------------------------------------------- LSTM, GRU, cells
def _rnn_module(sw: Sweep, m: Any) -> tuple[Node, ModuleSpec, str]:
    node = sw.old.node(m.anchor)
    spec = sw.modules.get(node.target) if node.op == "call_module" else None
    kind = spec.type.rsplit(".", 1)[-1] if spec is not None else ""
    if spec is None or not spec.type.startswith(NN) or kind not in _RNNS | _CELLS:
        raise CannotLower(f"no dynamic kernel for {spec.type if spec else node.target}")
    if not spec.attr("bias", True):
        raise CannotLower("bias=False: torch's dynamic RNN kernels need biases (torch.ao refuses it too)")
    if spec.attr("proj_size", 0):
        raise CannotLower("LSTM with proj_size has no dynamic kernel")
    return node, spec, kind


def _cell_weights(sw: Sweep, m: Any, spec: ModuleSpec, suffix: str, dtype: str) -> tuple[Ref, Ref, Ref, Ref]:
    """(packed w_ih, packed w_hh, b_ih, b_hh) of one layer and direction (`_l1_reverse`)."""
    paths = [spec.param(f"{kind}_{part}{suffix}") for part in ("ih", "hh") for kind in ("weight", "bias")]
    # int8: read every weight's qparams before emitting anything.
    found = [weight(sw, m, p) for p in paths[0::2]] if dtype == "int8" else [None, None]
    packed = []
    for i, part in enumerate(("ih", "hh")):
        b = sw.get_attr(paths[2 * i + 1])
        if dtype == "int8":
            w = sw.dialect.quantize_weight(sw, make_weight(sw, found[i]))
            packed.append(_prepack(sw, "linear_prepack", w, b, f"{m.anchor}_{part}{suffix}_packed"))
        else:
            w = sw.get_attr(paths[2 * i])
            packed.append(_prepack(sw, "linear_prepack_fp16", w, b, f"{m.anchor}_{part}{suffix}_packed"))
    return packed[0], packed[1], sw.get_attr(paths[1]), sw.get_attr(paths[3])


def _cell_params(sw: Sweep, m: Any, spec: ModuleSpec, suffix: str, dtype: str) -> Ref:
    """What torch.ao's dynamic LSTM/GRU hold per layer and direction: a CellParams object."""
    ih, hh, b_ih, b_hh = _cell_weights(sw, m, spec, suffix, dtype)
    prefix = f"{m.anchor}{suffix}_params"
    if dtype == "int8":
        reduce_range = bool(m.qconfig.activation.reduce_range)
        return sw.call(Q + "make_quantized_cell_params_dynamic", ih, hh, b_ih, b_hh, reduce_range,
                       prefix=prefix, kernel=True)
    return sw.call(Q + "make_quantized_cell_params_fp16", ih, hh, prefix=prefix, kernel=True)


def _zeros(sw: Sweep, x: Any, batch_dim: int, shape: tuple, prefix: str) -> Ref:
    """Emit: zeros shaped `shape` with the batch size of x (dimension `batch_dim`) inserted
    where `shape` holds None: the default hidden state, sized as the module sizes it."""
    n = sw.emit("call_method", "size", (x, batch_dim), prefix=f"{prefix}_batch")
    return sw.emit("call_method", "new_zeros", (x, tuple(n if s is None else s for s in shape)), prefix=prefix)


def _rnn(sw: Sweep, m: Any, node: Node, spec: ModuleSpec, kind: str, dtype: str) -> Ref:
    """nn.LSTM / nn.GRU as torch.ao's dynamic modules run them."""
    layers, dirs = spec.attr("num_layers", 1), 2 if spec.attr("bidirectional") else 1
    suffixes = [f"_l{i}{'_reverse' if k else ''}" for i in range(layers) for k in range(dirs)]
    params = tuple(_cell_params(sw, m, spec, s, dtype) for s in suffixes)
    x, hx = sw.float(arg(node, 0, "input")), sw.float(arg(node, 1, "hx"))
    batch_first = bool(spec.attr("batch_first"))
    if hx is None:
        z = _zeros(sw, x, 0 if batch_first else 1, (layers * dirs, None, spec.attr("hidden_size")), f"{m.anchor}_h0")
        hx = (z, z) if kind == "LSTM" else z
    flags = (True, layers, float(spec.attr("dropout", 0.0)), False, dirs == 2, batch_first)
    if kind == "GRU":  # already returns (output, h_n), as nn.GRU does
        return sw.call("torch.quantized_gru", x, hx, params, *flags, nid=m.root, kernel=True)
    qtype = Sym("torch.qint8" if dtype == "int8" else "torch.float16")
    r = sw.call("torch.quantized_lstm", x, hx, params, *flags, dtype=qtype, use_dynamic=True, kernel=True)
    out, h, c = (sw.call("operator.getitem", r, i, prefix=f"{m.anchor}_{n}") for i, n in enumerate("ohc"))
    # torch.quantized_lstm returns (output, h_n, c_n); nn.LSTM returns (output, (h_n, c_n)).
    return sw.call("builtins.tuple", (out, (h, c)), nid=m.root)


def _cell(sw: Sweep, m: Any, node: Node, spec: ModuleSpec, kind: str, dtype: str) -> Ref:
    """nn.LSTMCell / GRUCell / RNNCell on the dynamic cell kernels."""
    ih, hh, b_ih, b_hh = _cell_weights(sw, m, spec, "", dtype)
    x, hx = sw.float(arg(node, 0, "input")), sw.float(arg(node, 1, "hx"))
    if hx is None:
        z = _zeros(sw, x, 0, (None, spec.attr("hidden_size")), f"{m.anchor}_h0")
        hx = (z, z) if kind == "LSTMCell" else z
    if kind == "RNNCell":
        kernel = f"quantized_rnn_{spec.attr('nonlinearity', 'tanh')}_cell_dynamic"
    else:
        kernel = "quantized_lstm_cell_dynamic" if kind == "LSTMCell" else "quantized_gru_cell_dynamic"
    return sw.call(Q + kernel, x, hx, ih, hh, b_ih, b_hh, nid=m.root, kernel=True)


def native_dynamic_rnn(sw: Sweep, m: Any) -> Ref:
    """LSTM, GRU, LSTMCell, GRUCell, RNNCell with int8 or fp16 weights (float in and out)."""
    node, spec, kind = _rnn_module(sw, m)
    dtype = _dynamic_dtype(m)
    if kind in _RNNS:
        return _rnn(sw, m, node, spec, kind, dtype)
    return _cell(sw, m, node, spec, kind, dtype)


# ------------------------------------------------------------------- weight-only embeddings
@frozen
class _Embedding:
    """An Embedding / EmbeddingBag match, read: its node, spec, weight (qparams) and bits."""

    node: Node
    spec: ModuleSpec
    weight: tuple
    bits: int

    @property
    def is_bag(self) -> bool:
        return self.spec.type == NN + "EmbeddingBag"


def _embedding(sw: Sweep, m: Any) -> _Embedding:
    node = sw.old.node(m.anchor)
    spec = sw.modules.get(node.target) if node.op == "call_module" else None
    if spec is None or spec.type not in (NN + "Embedding", NN + "EmbeddingBag"):
        raise CannotLower(f"no weight-only kernel for {spec.type if spec else node.target}")
    if spec.attr("max_norm") is not None:
        raise CannotLower("max_norm renormalises rows as it runs: no quantized kernel does")
    found = weight(sw, m, spec.param("weight"))
    qp = found[2]
    bits = _EMBEDDING_BITS.get(qp.dtype)
    if bits is None or qp.axis != 0 or qp.qscheme != "per_channel_affine_float_qparams":
        raise CannotLower(f"embedding weights must be quint8/quint4x2 rows with float qparams, not {qp.dtype} {qp.qscheme}")
    if bits == 4 and spec.attr("embedding_dim", 0) % 2:
        raise CannotLower("4-bit rows pack two values a byte: embedding_dim must be even")
    return _Embedding(node, spec, found, bits)


def _rowwise(sw: Sweep, m: Any) -> bool:
    """Whether `embedding_bag_{byte,4bit}_prepack` computes the weight observer's qparams:
    per-row min/max with float offsets over the full range."""
    s = sw.insertion.weights.get(m.module_weight) or m.qconfig.weight
    return (s.kind == "per_channel_minmax" and s.ch_axis == 0 and not s.reduce_range
            and s.quant_min is None and s.quant_max is None)


def _bag_args(e: _Embedding, sw: Sweep) -> tuple:
    """(indices, offsets, scale_grad_by_freq, mode, pruned_weights, per_sample_weights,
    compressed_indices_mapping, include_last_offset): the bag kernels' arguments after weight."""
    if e.spec.attr("mode", "mean") != "sum":
        # Measured on torch 2.13: every quantized bag kernel sums, whatever `mode` says (so
        # torch.ao's quantized EmbeddingBag silently sums for mean and max).
        raise CannotLower(f"EmbeddingBag mode {e.spec.attr('mode')!r}: the quantized bag kernels only sum")
    if e.spec.attr("padding_idx") is not None:
        raise CannotLower("EmbeddingBag padding_idx: the quantized kernels do not skip padding")
    node = e.node
    ins = [sw.float(arg(node, i, k)) for i, k in enumerate(("input", "offsets", "per_sample_weights"))]
    return ins[0], ins[1], False, 0, False, ins[2], None, bool(e.spec.attr("include_last_offset"))


def native_weight_only_embedding(sw: Sweep, m: Any) -> Ref:
    """Embedding / EmbeddingBag with 8- or 4-bit rows; indices in, float out."""
    e = _embedding(sw, m)
    name = "byte" if e.bits == 8 else "4bit"
    tail = _bag_args(e, sw) if e.is_bag else (sw.float(arg(e.node, 0, "input")),)
    if e.is_bag and _rowwise(sw, m):
        w = sw.get_attr(e.weight[0])
        packed = sw.cached((f"{name}_prepack", w), lambda: sw.call(
            f"{Q}embedding_bag_{name}_prepack", w, prefix=f"{m.anchor}_packed", kernel=True))
        return sw.call(f"{Q}embedding_bag_{name}_rowwise_offsets", packed, *tail, nid=m.root, kernel=True)
    wq = NATIVE.quantize_weight(sw, make_weight(sw, e.weight))
    packed = sw.cached(("embedding_bag_prepack", wq), lambda: sw.call(
        Q + "embedding_bag_prepack", wq, prefix=f"{m.anchor}_packed", kernel=True))
    kernel = f"embedding_bag_{name}" if e.is_bag else f"embedding_{name}"
    return sw.call(Q + kernel, packed, *tail, nid=m.root, kernel=True)


def reference_weight_only_embedding(sw: Sweep, m: Any) -> Ref:
    """Embedding / EmbeddingBag on dequantized rows (integer rows kept, float lookup)."""
    e = _embedding(sw, m)
    wq = NATIVE.quantize_weight(sw, make_weight(sw, e.weight))
    w = sw.cached(("dequantize", wq), lambda: sw.call("torch.dequantize", wq, prefix=f"{m.anchor}_weight_dq"))
    x = sw.float(arg(e.node, 0, "input"))
    if not e.is_bag:
        return sw.call(F + "embedding", x, w, e.spec.attr("padding_idx"), nid=m.root, kernel=True)
    offsets, psw = sw.float(arg(e.node, 1, "offsets")), sw.float(arg(e.node, 2, "per_sample_weights"))
    kw = {k: e.spec.attr(k) for k in ("mode", "include_last_offset", "padding_idx")}
    return sw.emit("call_function", F + "embedding_bag", (x, w, offsets), {**kw, "per_sample_weights": psw},
                   nid=m.root, kernel=True)

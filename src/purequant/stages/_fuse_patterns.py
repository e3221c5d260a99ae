"""The fusion patterns of the `fuse` stage, as data, and the matcher that reads them.

A pattern is a chain root -> [bn] -> [relu] where each link is the only reader of the value
before it. Patterns are tried in table order and the first that matches a root wins, so the
table lists longer patterns first: that order is the whole priority rule, written down here.
Type names are the strings ModuleSpecs and call targets carry (see qconfig.names).
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen
from pyrsistent import PMap

from ..errors import StageError
from ..ir import Graph, ModuleSpec, Node, Ref, iter_refs

RELU = frozenset({
    "torch.nn.ReLU", "torch.nn.functional.relu", "torch.relu", "torch.relu_",
    "torch.Tensor.relu", "torch.Tensor.relu_",
})
_NN, _PQ = "torch.nn.", "purequant.nn."


@frozen
class FusePattern:
    """One fusable chain and what it becomes.

    Attributes:
        name: stable name used in records (`conv2d_bn2d_relu`).
        root: module type of the first node (`torch.nn.Conv2d`).
        bn: module type of the batch norm that follows, or None.
        relu: whether a relu (module, function or method) ends the chain.
        layout: "conv", "conv_transpose" or "linear": where the root's output channels are.
        eval_type: module type of the result when the bn (if any) is in eval mode and folded.
        train_type: module type of the result in training mode (bn kept for QAT), or None when
            the chain has no training-mode fused module.
    """

    name: str
    root: str
    bn: str | None
    relu: bool
    layout: str
    eval_type: str
    train_type: str | None


def _conv_patterns(n: int) -> tuple[FusePattern, ...]:
    conv, bn = f"{_NN}Conv{n}d", f"{_NN}BatchNorm{n}d"
    relu_type = f"{_PQ}ConvReLU{n}d"
    return (
        FusePattern(f"conv{n}d_bn{n}d_relu", conv, bn, True, "conv", relu_type, f"{_PQ}ConvBnReLU{n}d"),
        FusePattern(f"conv{n}d_bn{n}d", conv, bn, False, "conv", conv, f"{_PQ}ConvBn{n}d"),
        FusePattern(f"conv{n}d_relu", conv, None, True, "conv", relu_type, relu_type),
        FusePattern(f"conv_transpose{n}d_bn{n}d", f"{_NN}ConvTranspose{n}d", bn, False,
                    "conv_transpose", f"{_NN}ConvTranspose{n}d", None),
    )


PATTERNS: tuple[FusePattern, ...] = (
    *_conv_patterns(1), *_conv_patterns(2), *_conv_patterns(3),
    # linear+bn+relu has no torch counterpart; without it a folded linear+bn followed by a
    # relu would fuse only on a second run, and the stage would not be idempotent.
    FusePattern("linear_bn1d_relu", f"{_NN}Linear", f"{_NN}BatchNorm1d", True, "linear",
                f"{_PQ}LinearReLU", None),
    FusePattern("linear_bn1d", f"{_NN}Linear", f"{_NN}BatchNorm1d", False, "linear",
                f"{_NN}Linear", f"{_PQ}LinearBn1d"),
    FusePattern("linear_relu", f"{_NN}Linear", None, True, "linear", f"{_PQ}LinearReLU",
                f"{_PQ}LinearReLU"),
)


@frozen
class Candidate:
    """A chain whose types match `pattern`: `nodes` in chain order, and why it cannot fuse
    (`reason`), or None when it can."""

    pattern: FusePattern
    nodes: tuple[str, ...]
    reason: str | None = None


def patterns_by_root(patterns: tuple[FusePattern, ...]) -> dict[str, tuple[FusePattern, ...]]:
    """Patterns grouped by root type, each group in table order. O(patterns)."""
    out: dict[str, tuple[FusePattern, ...]] = {}
    for p in patterns:
        out[p.root] = out.get(p.root, ()) + (p,)
    return out


def type_of(node: Node, modules: PMap) -> str | None:
    """The type name a pattern matches `node` by: module type, function or `torch.Tensor.m`."""
    if node.op == "call_module":
        spec = modules.get(node.target)
        return spec.type if spec is not None else None
    if node.op == "call_function":
        return node.target
    if node.op == "call_method":
        return "torch.Tensor." + node.target
    return None


def walk(graph: Graph, modules: PMap, root: Node, pattern: FusePattern) -> Candidate | None:
    """Follow `pattern` from `root` along readers; None if the types do not line up.

    A chain whose types line up but where a link is not the only reader of the value before
    it is returned with a reason (the single-user rule). Pure; O(links * users).
    """
    nodes, prev, reason = [root.id], root.id, None
    for want in (pattern.bn, RELU if pattern.relu else None):
        if want is None:
            continue
        users = graph.users(prev)
        fits = [u for u in users if _continues(graph.node(u), prev, want, modules)]
        if not fits:
            return None
        if len(users) != 1 and reason is None:
            readers = ", ".join("%" + u for u in users)
            reason = (f"%{prev} has {len(users)} users ({readers}); fusing needs it to be read "
                      "only by the next op of the chain")
        nodes.append(fits[0])
        prev = fits[0]
    return Candidate(pattern, tuple(nodes), reason)


def _continues(node: Node, prev: str, want: str | frozenset, modules: PMap) -> bool:
    kind = type_of(node, modules)
    if kind is None or (kind not in want if isinstance(want, frozenset) else kind != want):
        return False
    if node.op != "call_function":
        return node.args == (Ref(prev),) and not node.kwargs
    # F.relu(x, inplace): the tensor first, then only plain flags.
    rest = node.args[1:] + tuple(node.kwargs.values())
    return bool(node.args) and node.args[0] == Ref(prev) and not any(iter_refs(rest))


def check(cand: Candidate, graph: Graph, modules: PMap, params: Mapping, calls: Mapping) -> Candidate:
    """`cand` with the reason it cannot fuse (module sharing, modes, bn state), if any. O(1)."""
    root = graph.node(cand.nodes[0])
    spec: ModuleSpec = modules[root.target]
    if calls[root.target] > 1:
        return _why(cand, f"module {root.target!r} is called by {calls[root.target]} nodes; "
                    "fusing it would change every call")
    if cand.reason is not None or cand.pattern.bn is None:
        return cand
    return _why(cand, _bn_reason(cand.pattern, spec, modules[graph.node(cand.nodes[1]).target], params))


def is_training(cand: Candidate, graph: Graph, modules: PMap) -> bool:
    """Whether the chain fuses in training (QAT) form: its bn (else its root) is training."""
    nid = cand.nodes[1] if cand.pattern.bn is not None else cand.nodes[0]
    return bool(modules[graph.node(nid).target].attr("training"))


def _bn_reason(pattern: FusePattern, spec: ModuleSpec, bn: ModuleSpec, params: Mapping) -> str | None:
    mode, bn_mode = spec.attr("training"), bn.attr("training")
    if mode is None or bn_mode is None:
        return "a module spec has no 'training' attr, so the bn's mode is unknown"
    if mode != bn_mode:
        return (f"{_mode(mode)} {pattern.layout} but {_mode(bn_mode)} batch norm; "
                "fusion needs both in the same mode")
    mean_path = bn.param("running_mean")
    if mean_path is None or bn.param("running_var") is None:
        return "the batch norm keeps no running statistics (track_running_stats=False)"
    weight = tensor(params, spec.param("weight"))
    if not weight.is_floating_point():
        return f"the {pattern.layout} weight is {weight.dtype}, not floating point"
    out = weight.shape[1] * spec.attr("groups", 1) if pattern.layout == "conv_transpose" else weight.shape[0]
    features = tensor(params, mean_path).numel()
    if features != out and not (pattern.layout == "linear" and features == 1):
        return f"the batch norm has {features} features but the {pattern.layout} has {out} outputs"
    if mode and pattern.train_type is None:
        return f"{pattern.name} has no training-mode (QAT) fused module"
    if mode and (bn.param("weight") is None or bn.param("bias") is None):
        return "training-mode (QAT) fusion needs an affine batch norm"
    return None


def tensor(params: Mapping, path: str | None):
    """The params entry at `path`; StageError if a spec names a path params does not hold."""
    if path not in params:
        raise StageError(f"params has no entry {path!r}, which a module spec names",
                         stage="fuse", hint="params and modules must come from the same trace")
    return params[path]


def _mode(training: bool) -> str:
    return "training-mode" if training else "eval-mode"


def _why(cand: Candidate, reason: str | None) -> Candidate:
    if reason is None or cand.reason is not None:
        return cand
    return Candidate(cand.pattern, cand.nodes, reason)

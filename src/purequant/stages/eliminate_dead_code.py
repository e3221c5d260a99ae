"""Dead-code elimination: drop pure nodes whose values nothing live reads.

One reverse sweep (no recursion): a node is live if it is impure or if any of its users is live.
Users always come after the node they read, so walking the order backwards decides every user
before the node itself. O(n + edges) for the sweep. Then, measured on a 30k-node chain (one local
erase ~90 us, one node through a builder ~45 us): a few dead nodes are erased last-first, which
erases every user of a dead node (all dead too) before the node, O(k log n); when a third or more
of the graph is dead, the live nodes are rebuilt through a builder instead, O(n).

Impure, hence always kept:
* `placeholder` and `output` nodes (the signature);
* in-place methods (`add_`, `copy_`: a name ending in `_`, dunders excepted), `__setitem__`,
  `__delitem__`, `backward` and friends;
* side-effecting functions (`torch._assert`, `builtins.print`, `operator.setitem`, in-place
  operators such as `operator.iadd`, in-place torch functions such as `torch.relu_`, RNG
  seeding, grad-mode and autocast switches), and any call with `inplace=True` or an `out=`;
* `call_module` nodes, unless the modules table is given and says the module's type is known
  pure: stateless layers always, and layers with training-time side effects (BatchNorm updates
  running stats, Dropout draws random numbers) only when their spec says `training=False`. A
  user's own module may do anything, so without its spec a call is kept.

`get_attr` and every other call are pure.
"""

from __future__ import annotations

from attrs import field, frozen
from pyrsistent import PMap

from ..ir import Graph, Node

IMPURE_FUNCTIONS = frozenset({
    "torch._assert", "torch._assert_async", "torch._check", "torch._check_is_size",
    "builtins.print", "print", "warnings.warn", "operator.setitem", "operator.delitem",
    "operator.iadd", "operator.isub", "operator.imul", "operator.itruediv", "operator.ifloordiv",
    "operator.imod", "operator.ipow", "operator.imatmul", "operator.iand", "operator.ior",
    "operator.ixor", "operator.ilshift", "operator.irshift", "operator.iconcat",
    "torch.manual_seed", "torch.seed", "torch.set_grad_enabled", "torch._C._set_grad_enabled",
    "torch.amp.autocast_mode._enter_autocast", "torch.amp.autocast_mode._exit_autocast",
    "torch.ops.profiler._record_function_enter", "torch.ops.profiler._record_function_enter_new",
    "torch.ops.profiler._record_function_exit",
})
IMPURE_METHODS = frozenset({
    "__setitem__", "__delitem__", "backward", "register_hook", "retain_grad", "record_stream",
})
PURE_MODULE_TYPES = frozenset(
    "torch.nn." + name for name in (
        "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
        "Linear", "Bilinear", "Identity", "Flatten", "Unflatten", "Embedding", "EmbeddingBag",
        "ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish",
        "Hardswish", "Hardsigmoid", "Hardtanh", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
        "Softplus", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
        "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d",
        "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "LayerNorm", "GroupNorm", "Upsample",
        "PixelShuffle", "ZeroPad2d", "ConstantPad2d", "LSTM", "GRU", "RNN",
    )
)
PURE_IN_EVAL_MODULE_TYPES = frozenset(
    "torch.nn." + name for name in (
        "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d",
        "InstanceNorm3d", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
        "MultiheadAttention",
    )
)


@frozen
class DeadCodeRecord:
    """What eliminate_dead_code removed.

    Attributes:
        removed: ids of the erased nodes, in their order in the input graph.
    """

    removed: tuple = field(default=(), converter=tuple)


def eliminate_dead_code(graph: Graph, modules: PMap | None = None) -> tuple[Graph, DeadCodeRecord]:
    """Erase every pure node whose value no live node reads.

    Args:
        graph: the graph (not modified).
        modules: call_module target -> ModuleSpec; lets dead calls of known-pure module types
            go. Without it every call_module node is kept.

    Returns:
        `(graph, DeadCodeRecord)`; the very same graph object when nothing is dead.
        O(n + edges + min(k log n, n)) for k removed nodes.
    """
    live: set[str] = set()
    dead: list[str] = []  # last-first
    users = graph.users_map
    for node in reversed(graph.node_list()):
        if is_impure(node, modules) or any(u in live for u in users[node.id]):
            live.add(node.id)
        else:
            dead.append(node.id)
    if not dead:
        return graph, DeadCodeRecord(())
    return _without(graph, dead), DeadCodeRecord(tuple(reversed(dead)))


def _without(graph: Graph, dead: list[str]) -> Graph:
    """`graph` minus `dead` (given last-first). Id counters are kept either way."""
    if 3 * len(dead) < len(graph):
        for nid in dead:  # last-first: a dead node's users (all dead) are already erased
            graph = graph.erase(nid)
        return graph
    gone = set(dead)
    b = graph.builder()
    for node in graph.node_list():
        if node.id not in gone:
            b.add(node)
    return b.finish()


def is_impure(node: Node, modules: PMap | None = None) -> bool:
    """Whether removing `node` could change behaviour even if its value is unused."""
    op = node.op
    if op in ("placeholder", "output"):
        return True
    if op == "get_attr":
        return False
    if node.kwargs.get("inplace") is True or node.kwargs.get("out") is not None:
        return True
    if op == "call_method":
        return _in_place(node.target) or node.target in IMPURE_METHODS
    if op == "call_function":
        return node.target in IMPURE_FUNCTIONS or _in_place_function(node.target)
    return not _pure_module(node.target, modules)


def _in_place(name: str) -> bool:
    return name.endswith("_") and not name.startswith("__")


def _in_place_function(target: str) -> bool:
    parts = target.split(".")
    if _in_place(parts[-1]):
        return True
    # An aten overload is `torch.ops.aten.add_.Tensor`: the op name is the part before last.
    return target.startswith("torch.ops.") and len(parts) > 3 and _in_place(parts[-2])


def _pure_module(target: str, modules: PMap | None) -> bool:
    spec = modules.get(target) if modules is not None else None
    if spec is None:
        return False
    if spec.type in PURE_MODULE_TYPES:
        return True
    return spec.type in PURE_IN_EVAL_MODULE_TYPES and spec.attrs.get("training") is False

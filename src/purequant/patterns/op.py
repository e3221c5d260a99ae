"""Op descriptors: which nodes a pattern position accepts, as plain frozen data.

An `Op` is three sets of names, one per way a graph can call something:

* `modules`: qualified class names of `call_module` targets' types (`torch.nn.Conv2d`);
* `functions`: qualified names of `call_function` targets (`torch.nn.functional.relu`);
* `methods`: bare Tensor method names of `call_method` targets (`relu`, `view`).

Alternatives are unions: `module("torch.nn.ReLU") | function("torch.nn.functional.relu")`
accepts either. Names are the canonical ones of `purequant.qconfig.names.qualified_name`, the
same strings the tracer writes into the graph, so matching is string equality.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from attrs import field, frozen

from ..ir import ModuleSpec, Node

MODULE, FUNCTION, METHOD = "module", "function", "method"

# A node's lookup key: (kind, name). One dict lookup finds the entries rooted at that op.
OpKey = tuple[str, str]


def _names(value) -> frozenset[str]:
    return value if isinstance(value, frozenset) else frozenset(value)


@frozen
class Op:
    """A set of accepted callables, by kind; matches a node calling any one of them."""

    modules: frozenset[str] = field(default=frozenset(), converter=_names)
    functions: frozenset[str] = field(default=frozenset(), converter=_names)
    methods: frozenset[str] = field(default=frozenset(), converter=_names)

    def __or__(self, other: Op) -> Op:
        return Op(
            self.modules | other.modules,
            self.functions | other.functions,
            self.methods | other.methods,
        )

    def keys(self) -> Iterator[OpKey]:
        """Every (kind, name) this op accepts, sorted (used to index tables)."""
        for kind, names in ((MODULE, self.modules), (FUNCTION, self.functions), (METHOD, self.methods)):
            for name in sorted(names):
                yield kind, name

    def matches(self, node: Node, modules: Mapping[str, ModuleSpec]) -> bool:
        key = node_key(node, modules)
        if key is None:
            return False
        kind, name = key
        names = self.modules if kind == MODULE else self.functions if kind == FUNCTION else self.methods
        return name in names

    def __str__(self) -> str:
        parts = [_short(n) for n in sorted(self.modules)]
        parts += [_short(n) for n in sorted(self.functions)]
        parts += ["." + n for n in sorted(self.methods)]
        return parts[0] if len(parts) == 1 else "{" + "|".join(parts) + "}"


def module(*names: str) -> Op:
    """An op accepting `call_module` nodes whose module type is one of `names`."""
    return Op(modules=frozenset(names))


def function(*names: str) -> Op:
    """An op accepting `call_function` nodes whose target is one of `names`."""
    return Op(functions=frozenset(names))


def method(*names: str) -> Op:
    """An op accepting `call_method` nodes whose method name is one of `names`."""
    return Op(methods=frozenset(names))


def node_key(node: Node, modules: Mapping[str, ModuleSpec]) -> OpKey | None:
    """The (kind, name) a node calls; None for placeholders, attributes and the output.

    A call_module's type comes from `modules` (the traced ModuleSpecs); a node whose target is
    missing there falls back to its `type` meta, which the tracer also records.
    """
    op = node.op
    if op == "call_function":
        return FUNCTION, node.target
    if op == "call_method":
        return METHOD, node.target
    if op == "call_module":
        spec = modules.get(node.target)
        name = spec.type if spec is not None else node.meta.get("type")
        return (MODULE, name) if isinstance(name, str) else None
    return None


def _short(name: str) -> str:
    # Printing only: "torch.nn.functional.relu" -> "F.relu", "torch.nn.Conv2d" -> "nn.Conv2d".
    for prefix, short in (("torch.nn.functional.", "F."), ("torch.ao.nn.", "ao.nn."), ("torch.nn.", "nn.")):
        if name.startswith(prefix):
            return short + name[len(prefix):]
    return name

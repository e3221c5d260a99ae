"""Hypothesis strategies for random, valid graphs and small real models.

Graphs are generated in two steps, so they stay valid and shrink well:

1. `graph_recipes()` draws a *recipe*: plain data, a tuple of `Op`s whose edges are look-back
   offsets (`Back(0)` is the value made just before, `Back(1)` the one before that, taken
   modulo the number of values so far). No recipe can name a value that does not exist yet, so
   every recipe is acyclic by construction and every shrink of it is still a valid recipe.
2. `build_graph(recipe)` turns it into a `Graph` (a pure function of the recipe).

`graphs()` is the two composed. When a property fails, Hypothesis reports the shrunk recipe,
which reads like the graph (`Op('call_function', 'operator.add', (Back(0), Back(1)))`).

Model recipes (`model_recipes()`, `build_model`, `example_input`) live in `.models` and are
re-exported here: real conv/bn/relu/linear/add/cat chains that torch.fx traces into
`call_module` nodes.

Example:
    >>> from hypothesis import given, settings
    >>> from purequant.ir import check_graph
    >>> from purequant.testing.strategies import graphs
    >>> @settings(max_examples=5, deadline=None)
    ... @given(graphs())
    ... def test_every_graph_is_well_formed(graph):
    ...     check_graph(graph)
    >>> test_every_graph_is_well_formed()
"""

from __future__ import annotations

from typing import Any, NamedTuple

from hypothesis import strategies as st
from pyrsistent import pmap, pvector

from ..ir import Graph, GraphBuilder, Node, Ref, Slice, Sym
from .models import ModelRecipe, build_model, example_input, model_recipes

__all__ = [
    "OPS_WITH_INPUTS", "Back", "Const", "DictOf", "ListOf", "ModelRecipe", "Op", "SliceOf",
    "TupleOf", "build_graph", "build_model", "example_input", "graph_recipes", "graphs",
    "ir_values", "model_recipes", "sym_names", "assemble_recipe",
]


# --------------------------------------------------------------------------- recipe data
class Back(NamedTuple):
    """An edge in a recipe: the value made `offset` values before the current op (mod count)."""

    offset: int


class Const(NamedTuple):
    """A constant argument (any plain value a graph may hold, never a Ref)."""

    value: Any


class ListOf(NamedTuple):
    """A list argument (a PVector in the graph), e.g. the tensors of `torch.cat`."""

    items: tuple


class TupleOf(NamedTuple):
    """A tuple argument whose items are argument recipes."""

    items: tuple


class DictOf(NamedTuple):
    """A dict argument (a PMap in the graph): pairs of (constant key, argument recipe)."""

    items: tuple


class SliceOf(NamedTuple):
    """A slice whose bounds are argument recipes (fx allows nodes as slice bounds)."""

    start: Any
    stop: Any
    step: Any


class Op(NamedTuple):
    """One node of a recipe.

    Attributes:
        op: the node's op (`placeholder`, `call_function`, ..., `output`).
        target: the node's target; for a placeholder, the argument name (a repeated name is
            replaced by the node's id).
        args: argument recipes (`Back`, `Const`, `ListOf`, `TupleOf`, `DictOf`, `SliceOf`).
        kwargs: pairs of (identifier, argument recipe).
        meta: pairs of (identifier, constant): the node's provenance.
    """

    op: str
    target: str
    args: tuple = ()
    kwargs: tuple = ()
    meta: tuple = ()


OPS_WITH_INPUTS = ("call_function", "call_method", "call_module", "output")


# --------------------------------------------------------------------------- building
def build_graph(recipe: tuple[Op, ...]) -> Graph:
    """Build the Graph a recipe describes. Pure: the same recipe gives an equal graph.

    Ids are fx-style and deterministic: the last part of the target (`add`, `add_1`, `relu`),
    the sanitized module or attribute path (`layer1_0_conv`), the sanitized placeholder name.

    Args:
        recipe: a tuple of `Op`; the last one, and only it, has op `output`.

    Returns:
        A well-formed Graph.

    Raises:
        ValueError: the recipe has no output last, more than one output, or an op reads a value
            before any exists.
    """
    if not recipe or recipe[-1].op != "output" or any(o.op == "output" for o in recipe[:-1]):
        raise ValueError("a recipe must end with its only 'output' op")
    b = GraphBuilder()
    values: list[Ref] = []
    signature: set[str] = set()
    for k, op in enumerate(recipe):
        if op.op in OPS_WITH_INPUTS and not values and _reads(op):
            raise ValueError(f"recipe op {k} ({op.op} {op.target}) reads a value before any exists")
        nid = b.fresh_id(_id_prefix(op))
        target = op.target
        if op.op == "placeholder":
            # Argument names are unique in a signature: a repeated one takes its node's id.
            target = nid if target in signature else target
            signature.add(target)
        args = tuple(_arg(a, values) for a in op.args)
        kwargs = {name: _arg(a, values) for name, a in op.kwargs}
        values.append(b.add(Node(nid, op.op, target, args, pmap(kwargs), pmap(dict(op.meta)))))
    return b.finish()


def _reads(op: Op) -> bool:
    return any(_has_back(a) for a in op.args) or any(_has_back(a) for _, a in op.kwargs)


def _has_back(arg: Any) -> bool:
    if isinstance(arg, Back):
        return True
    if isinstance(arg, (ListOf, TupleOf)):
        return any(_has_back(a) for a in arg.items)
    if isinstance(arg, DictOf):
        return any(_has_back(a) for _, a in arg.items)
    if isinstance(arg, SliceOf):
        return any(_has_back(a) for a in arg)
    return False


def _id_prefix(op: Op) -> str:
    if op.op in ("call_function", "call_method"):
        return op.target.rsplit(".", 1)[-1]
    return op.target


def _arg(arg: Any, values: list[Ref]) -> Any:
    """The graph value of an argument recipe, resolving look-back offsets against `values`."""
    if isinstance(arg, Back):
        return values[-1 - arg.offset % len(values)]
    if isinstance(arg, Const):
        return arg.value
    if isinstance(arg, ListOf):
        return pvector(_arg(a, values) for a in arg.items)
    if isinstance(arg, TupleOf):
        return tuple(_arg(a, values) for a in arg.items)
    if isinstance(arg, DictOf):
        return pmap({key: _arg(a, values) for key, a in arg.items})
    if isinstance(arg, SliceOf):
        return Slice(*(_arg(a, values) for a in arg))
    raise TypeError(f"not an argument recipe: {arg!r}")


# --------------------------------------------------------------------------- constants
_IDENT = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
_DTYPES = ("torch.float32", "torch.qint8", "torch.quint8", "torch.per_tensor_affine",
           "torch.contiguous_format")


def sym_names(*, weird: bool = False) -> st.SearchStrategy[str]:
    """Names of `Sym` constants: dotted identifiers, or with `weird`, any text."""
    dotted = st.lists(_IDENT, min_size=1, max_size=3).map(".".join)
    names = st.sampled_from(_DTYPES) | dotted
    if weird:
        word = st.text(alphabet="az09_é", min_size=1, max_size=3)  # parts that are not identifiers
        names = names | st.lists(word, min_size=1, max_size=3).map(".".join) | st.text(max_size=4)
    return names


def _scalars(weird: bool) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),  # includes nan, inf, -inf, -0.0 and subnormals
        st.sampled_from([0.0, -0.0, float("nan"), float("inf"), float("-inf")]),
        st.text(max_size=8) | st.sampled_from(["it's", 'say "hi"', "a\\b", "#", "\n", "%x", "@y"]),
        st.just(Ellipsis),
        st.builds(Sym, sym_names(weird=weird)),
    )


def ir_values(*, weird: bool = False, max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Every kind of constant the IR allows, nested: None, bool, int, float (nan, inf, -0.0),
    str (quotes, backslashes, newlines), Ellipsis, Sym, Slice, tuples, PVector lists and PMap
    dicts (string or int keys).

    Args:
        weird: also draw Sym names that are not dotted identifiers.
        max_leaves: bound on the size of nested values.
    """
    keys = st.text(max_size=4) | st.integers(-3, 3)

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.lists(children, max_size=3).map(tuple),
            st.lists(children, max_size=3).map(pvector),
            st.dictionaries(keys, children, max_size=3).map(pmap),
            st.builds(Slice, children, children, children),
        )

    return st.recursive(_scalars(weird), extend, max_leaves=max_leaves)


# --------------------------------------------------------------------------- op families
_BACK = st.builds(Back, st.integers(0, 6))
_META_KEYS = st.sampled_from(["scope", "source", "stage", "type", "nn_module_stack"])
_ATTR_PATHS = ("weight", "bias", "_tensor_constant0", "layer1.0.conv1.weight", "scale", "fc.bias")
_MODULE_PATHS = ("conv1", "bn1", "relu", "fc", "layer1.0.conv1", "layer1.0.bn1", "features.3",
                 "blocks.0.attn", "quant")


def _const(weird: bool) -> st.SearchStrategy[Const]:
    return st.builds(Const, ir_values(weird=weird, max_leaves=4))


def _arg_recipes(weird: bool) -> st.SearchStrategy[Any]:
    """Arguments with edges anywhere inside them (lists, tuples, dicts, slice bounds)."""
    leaf = _BACK | _const(weird)
    return st.recursive(
        leaf,
        lambda kids: st.one_of(
            st.builds(ListOf, st.lists(kids, max_size=3).map(tuple)),
            st.builds(TupleOf, st.lists(kids, max_size=3).map(tuple)),
            st.builds(DictOf, st.lists(st.tuples(st.text(max_size=3) | st.integers(0, 3), kids),
                                       max_size=2, unique_by=lambda kv: kv[0]).map(tuple)),
            st.builds(SliceOf, kids, kids, kids),
        ),
        max_leaves=4,
    )


def _kwargs(values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple]:
    return st.lists(st.tuples(_IDENT, values), max_size=2, unique_by=lambda kv: kv[0]).map(tuple)


def _meta(weird: bool) -> st.SearchStrategy[tuple]:
    pairs = st.lists(st.tuples(_META_KEYS, ir_values(weird=weird, max_leaves=3)),
                     max_size=2, unique_by=lambda kv: kv[0])
    return st.just(()) | pairs.map(tuple)


# Floats that break naive code (equality, printing, hashing) come up often, not by luck.
_SPECIAL_FLOATS = st.sampled_from([float("nan"), -0.0, float("inf"), float("-inf"), 0.5, 1e-300])
_STRINGS = st.sampled_from(["bilinear", "it's", 'say "hi"', "a\\b", "line\nbreak", "#", "%x"]) | st.text(max_size=6)


def _number() -> st.SearchStrategy[Const]:
    return st.builds(Const, _SPECIAL_FLOATS | st.integers(-4, 4) | st.floats(-4, 4))


def _index() -> st.SearchStrategy[Const]:
    part = st.one_of(st.integers(-2, 2), st.just(None), st.just(Ellipsis),
                     st.builds(Slice, st.none() | st.integers(0, 2), st.none() | st.integers(-1, 3),
                               st.none() | st.just(2)))
    return st.builds(Const, part | st.lists(part, min_size=1, max_size=3).map(tuple))


_EMPTY = st.just(())


def _op(op: str, target: Any, args: Any = _EMPTY, kwargs: Any = _EMPTY, meta: Any = _EMPTY):
    """Ops drawn as `Op(...)` calls, so a failing example prints as the recipe it is."""
    if isinstance(target, str):
        target = st.just(target)
    return st.builds(Op, st.just(op), target, args, kwargs, meta)


def _fn(target: Any, args: st.SearchStrategy[tuple], kwargs: st.SearchStrategy[tuple] = _EMPTY):
    return _op("call_function", target, args, kwargs)


def _method(target: str, args: st.SearchStrategy[tuple], kwargs: st.SearchStrategy[tuple] = _EMPTY):
    return _op("call_method", target, args, kwargs)


def _realistic_ops() -> st.SearchStrategy[Op]:
    """Ops shaped like what torch.fx records for real models (simplest first, for shrinking)."""
    one, two = st.tuples(_BACK), st.tuples(_BACK, _BACK)
    binary = st.sampled_from(["operator.add", "operator.mul", "operator.sub", "torch.add"])
    unary = st.sampled_from(["torch.relu", "torch.sigmoid", "torch.nn.functional.relu"])
    return st.one_of(
        _fn(binary, st.tuples(_BACK, _BACK | _number())),
        _fn(unary, one),
        _op("call_module", st.sampled_from(_MODULE_PATHS), one | two, _EMPTY, _meta(False)),
        _method("relu", one),
        _method("view", st.tuples(_BACK, *[st.builds(Const, st.integers(-1, 8))] * 2)),
        _method("size", st.tuples(_BACK) | st.tuples(_BACK, st.builds(Const, st.integers(0, 3)))),
        _method("to", st.tuples(_BACK, st.builds(Const, st.builds(Sym, st.sampled_from(_DTYPES))))),
        _method("mean", one, st.just((("dim", Const((2, 3))), ("keepdim", Const(True))))),
        _fn("torch.cat", st.tuples(st.builds(ListOf, st.lists(_BACK, min_size=1, max_size=3).map(tuple))),
            st.tuples(st.tuples(st.just("dim"), st.builds(Const, st.integers(-1, 1))))),
        _fn("torch.flatten", st.tuples(_BACK, st.builds(Const, st.integers(0, 1)))),
        _fn("operator.getitem", st.tuples(_BACK, _index())),
        _fn("torch.nn.functional.linear", st.tuples(_BACK, _BACK, _BACK | st.just(Const(None)))),
        _fn("torch.nn.functional.relu", one, st.just((("inplace", Const(False)),))),
        _fn("torch.full", st.tuples(st.builds(Const, st.tuples(st.integers(1, 4), st.integers(1, 4))),
                                    st.builds(Const, _SPECIAL_FLOATS))),
        _fn("torch.nn.functional.interpolate", one, st.tuples(st.tuples(st.just("mode"), st.builds(Const, _STRINGS)))),
        _op("get_attr", st.sampled_from(_ATTR_PATHS), st.just(())),
    )


def _generic_ops(weird: bool) -> st.SearchStrategy[Op]:
    """Any op with any arguments, kwargs and provenance (every constant kind, nested edges)."""
    ops = st.sampled_from(["call_function", "call_method", "call_module", "get_attr"])
    targets = st.sampled_from(["operator.add", "torch.cat", "view", "conv1", "torch.ops.aten.add.Tensor"])
    if weird:
        targets = targets | st.text(max_size=8)
    args = st.lists(_arg_recipes(weird), max_size=3).map(tuple)
    return st.builds(Op, ops, targets, args, _kwargs(_arg_recipes(weird)), _meta(weird))


def _placeholder(weird: bool) -> st.SearchStrategy[Op]:
    names = st.sampled_from(["x", "input", "y", "v1", "v0", "self_x"]) | _IDENT
    if weird:
        names = names | st.text(max_size=5)
    return _op("placeholder", names, st.just(()), st.just(()), _meta(weird))


def _output() -> st.SearchStrategy[Op]:
    value = st.one_of(
        _BACK,
        st.builds(TupleOf, st.lists(_BACK, min_size=1, max_size=3).map(tuple)),
        st.builds(DictOf, st.lists(st.tuples(_IDENT, _BACK), min_size=1, max_size=2,
                                   unique_by=lambda kv: kv[0]).map(tuple)),
    )
    return _op("output", "output", st.tuples(value))


def assemble_recipe(placeholders: list[Op], ops: list[Op], output: Op) -> tuple[Op, ...]:
    """A recipe from its three parts (named, so failing examples print readably)."""
    return (*placeholders, *ops, output)


def graph_recipes(
    *, min_ops: int = 0, max_ops: int = 10, max_placeholders: int = 3, weird: bool = False
) -> st.SearchStrategy[tuple[Op, ...]]:
    """Recipes of valid graphs: 1..max_placeholders placeholders, then up to `max_ops` ops
    (realistic fx-like ops, get_attr, and generic ops carrying every kind of constant), then
    exactly one output. Values are often read several times (small look-back offsets).

    Args:
        min_ops: fewest ops between the placeholders and the output.
        max_ops: most ops between the placeholders and the output.
        max_placeholders: most placeholders (at least one is always drawn).
        weird: also draw arbitrary text as targets, placeholder names and Sym names, to fuzz
            the text format; realistic graphs otherwise.
    """
    body = st.one_of(_realistic_ops(), _generic_ops(weird))
    return st.builds(
        assemble_recipe,
        st.lists(_placeholder(weird), min_size=1, max_size=max_placeholders),
        st.lists(body, min_size=min_ops, max_size=max_ops),
        _output(),
    )


def graphs(**kwargs: Any) -> st.SearchStrategy[Graph]:
    """Random well-formed graphs: `graph_recipes(**kwargs)` mapped through `build_graph`."""
    return graph_recipes(**kwargs).map(build_graph)

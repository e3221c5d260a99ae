"""The shipped testing kit: docs and docstring examples run, laws catch what they promise to,
strategies cover what they promise, model recipes are deterministic and leave the RNG alone."""

from __future__ import annotations

import doctest
import itertools
import math
import re
from pathlib import Path

import attrs
import pytest
import torch
import torch.fx
from hypothesis import given, settings
from pyrsistent import PMap, PVector, pmap, pvector

from purequant.ir import Graph, Node, Ref, Slice, Sym, check_graph, parse_graph, print_graph
from purequant.testing import laws, models, strategies
from purequant.testing.models import (
    Add,
    BatchNorm,
    Cat,
    Conv,
    Flatten,
    Head,
    Linear,
    ModelRecipe,
    Pool,
    ReLU,
)
from purequant.testing.strategies import (
    Back,
    Const,
    DictOf,
    ListOf,
    Op,
    SliceOf,
    TupleOf,
    build_graph,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
G = parse_graph("""\
%x = placeholder x()
%relu = call_function torch.relu(%x)
%add = call_function operator.add(%relu, %x)
%output = output output(%add)
""")


# ------------------------------------------------------------------ documentation runs
def test_docs_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 2
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, str(DOCS), "exec"), namespace)
        for name, fn in namespace.items():
            if name.startswith("test_") and callable(fn):
                fn()


@pytest.mark.parametrize("module", [laws, strategies])
def test_module_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------ laws catch violations
def identity(graph):
    return graph, ()


def test_laws_pass_on_a_good_stage():
    laws.check_laws(identity, G, idempotent=True)
    laws.check_noop_identity(identity, G)


def test_well_formed_catches_a_malformed_output():
    def bad(graph):
        return graph.append(Node("late", "call_function", "torch.relu", (Ref("x"),))), ()

    with pytest.raises(AssertionError, match="law 'well-formed' fails for stage .*bad") as e:
        laws.check_well_formed(bad, G)
    assert ">> %late" in str(e.value) and "output:" in str(e.value)
    with pytest.raises(AssertionError, match="input graph is not well-formed"):
        laws.check_well_formed(identity, bad(G)[0])


def test_pure_catches_changes_to_the_input():
    def rebinds(graph):
        object.__setattr__(graph, "head", "relu")
        return graph, ()

    def rebinds_equal_map(graph):
        object.__setattr__(graph, "_nodes", pmap(dict(graph.nodes)))  # the field's storage slot
        return graph, ()

    def corrupts_cache(graph):
        graph.ids()
        graph._cache["ids"] = graph.ids()[::-1]
        return graph, ()

    def copies_a_node(graph):
        n = graph.node("relu")
        object.__setattr__(graph, "_nodes", graph.nodes.set("relu", attrs.evolve(n)))
        return graph, ()

    cases = [
        (rebinds, "it changed its input graph"),
        (rebinds_equal_map, "it replaced the field 'nodes'"),
        (corrupts_cache, "corrupted the cached order"),
        (copies_a_node, "replaced node %relu of its input graph by an equal copy"),
    ]
    for stage, message in cases:
        g = parse_graph(print_graph(G))
        with pytest.raises(AssertionError, match=re.escape(message)) as e:
            laws.check_pure(stage, g)
        assert "law 'pure'" in str(e.value)


def test_pure_shows_a_diff():
    def rebinds(graph):
        object.__setattr__(graph, "_nodes", graph.nodes.set("relu", Node("relu", "call_function", "torch.tanh", (Ref("x"),))))
        return graph, ()

    with pytest.raises(AssertionError) as e:
        laws.check_pure(rebinds, parse_graph(print_graph(G)))
    assert "-%relu = call_function torch.relu(%x)" in str(e.value)
    assert "+%relu = call_function torch.tanh(%x)" in str(e.value)


def test_deterministic_catches_hidden_state_and_identity():
    counter = itertools.count()

    def counts(graph):
        return graph, (next(counter),)

    known = {id(n) for n in G.node_list()}

    def by_identity(graph):  # a cache keyed by id(): the result depends on which objects came in
        target = "torch.tanh" if id(graph.node("relu")) in known else "torch.sigmoid"
        return graph.update("relu", target=target), ()

    def nan_record(graph):
        return graph, (float("nan"), {"x": -0.0})

    with pytest.raises(AssertionError, match="two runs gave different records") as e:
        laws.check_deterministic(counts, G)
    assert "-(0,)" in str(e.value) and "+(1,)" in str(e.value)
    with pytest.raises(AssertionError, match="two runs gave different graphs") as e:
        laws.check_deterministic(by_identity, G)
    assert "-%relu = call_function torch.tanh(%x)" in str(e.value)
    laws.check_deterministic(nan_record, G)


def test_noop_identity_and_idempotent():
    def copies(graph):
        return Graph.from_nodes(graph.node_list()), ()

    def adds_an_observer(graph):
        nid = graph.fresh_id("obs")
        return graph.insert_after("x", Node(nid, "call_function", "observe", (Ref("x"),))), ()

    with pytest.raises(AssertionError, match="returned a new graph equal to its input"):
        laws.check_noop_identity(copies, G)
    with pytest.raises(AssertionError, match=r"changed a graph it had nothing to do on:\n(.|\n)*\+%obs = "):
        laws.check_noop_identity(adds_an_observer, G)
    with pytest.raises(AssertionError, match=r"a second run changed its output:(.|\n)*\+%obs_1 = "):
        laws.check_idempotent(adds_an_observer, G)
    with pytest.raises(AssertionError, match="returned a new graph"):
        laws.check_idempotent(copies, G)
    laws.check_idempotent(copies, G, same_object=False)
    with pytest.raises(AssertionError, match="returned no graph"):
        laws.check_noop_identity(lambda g: {"count": len(g)}, G)


def test_run_stage_splits_results():
    assert laws.run_stage(identity, G) == (G, ())
    assert laws.run_stage(lambda g: g, G) == (G, None)
    assert laws.run_stage(lambda g: ("record", 1), G) == (None, ("record", 1))


def test_same_value():
    assert laws.same_value((math.nan, [1.0]), (float("nan"), [1.0]))
    assert not laws.same_value(0.0, -0.0)
    assert not laws.same_value(True, 1)
    assert laws.same_value(pmap({"a": Slice(1, math.nan)}), pmap({"a": Slice(1, float("nan"))}))
    assert not laws.same_value(pmap({"a": 1}), pmap({"b": 1}))

    @attrs.frozen
    class Record:
        n: float
        seconds: float = attrs.field(eq=False)

    assert laws.same_value(Record(math.nan, 1.0), Record(math.nan, 2.0))
    assert not laws.same_value(Record(1.0, 1.0), Record(2.0, 1.0))


# ------------------------------------------------------------------ graph recipes
def test_build_graph_ids_and_values():
    recipe = (
        Op("placeholder", "x"),
        Op("get_attr", "layer1.0.conv.weight"),
        Op("call_function", "torch.cat", (ListOf((Back(1), Back(0))),), (("dim", Const(1)),)),
        Op("call_function", "operator.getitem", (Back(0), Const((Slice(None, 2), Ellipsis)))),
        Op("call_method", "view", (Back(0), SliceOf(Back(3), Const(None), Const(2)))),
        Op("call_module", "features.3", (DictOf((("k", Back(0)),)), TupleOf((Back(4),))), (), (("scope", "features"),)),
        Op("output", "output", (TupleOf((Back(0), Back(99))),)),
    )
    g = check_graph(build_graph(recipe))
    assert g.ids() == ("x", "layer1_0_conv_weight", "cat", "getitem", "view", "features", "output")
    assert g.node("cat").args == (pvector([Ref("x"), Ref("layer1_0_conv_weight")]),)
    assert g.node("cat").kwargs == pmap({"dim": 1})
    assert g.node("view").args[1] == Slice(Ref("x"), None, 2)
    assert g.node("features").args[0] == pmap({"k": Ref("view")})
    assert g.node("output").args == ((Ref("features"), Ref("cat")),)  # 6 values: 99 % 6 == 3 back
    assert build_graph(recipe) == g and print_graph(build_graph(recipe)) == print_graph(g)


@pytest.mark.parametrize(
    "recipe, message",
    [
        ((), "must end with its only 'output'"),
        ((Op("placeholder", "x"),), "must end with its only 'output'"),
        ((Op("output", "output", (Back(0),)), Op("output", "output")), "must end with its only 'output'"),
        ((Op("call_function", "f", (Back(0),)), Op("output", "output")), "reads a value before any exists"),
    ],
)
def test_build_graph_refuses_bad_recipes(recipe, message):
    with pytest.raises(ValueError, match=message):
        build_graph(recipe)


def _kinds(value, out: set) -> None:
    t = type(value)
    if t is float:
        out.add("nan" if math.isnan(value) else "inf" if math.isinf(value) else "-0.0" if str(value) == "-0.0" else "float")
    elif t is str:
        out.add("quoted str" if "'" in value or '"' in value else "str")
    elif t in (bool, int, Sym, Ref, type(None), type(Ellipsis)):
        out.add(t.__name__)
    elif t is tuple or isinstance(value, (PVector, PMap)):
        out.add("tuple" if t is tuple else "list" if isinstance(value, PVector) else "dict")
        for v in (value.values() if isinstance(value, PMap) else value):
            _kinds(v, out)
    elif t is Slice:
        out.add("Slice")
        for v in (value.start, value.stop, value.step):
            _kinds(v, out)


def test_graphs_cover_what_they_promise():
    seen: set = set()

    @settings(max_examples=150, deadline=None, database=None, derandomize=True)
    @given(strategies.graphs())
    def collect(graph):
        check_graph(graph)
        assert sum(n.op == "output" for n in graph.node_list()) == 1
        for n in graph.node_list():
            seen.add(n.op)
            seen.add(n.target)
            if n.kwargs:
                seen.add("kwargs")
            if n.meta:
                seen.add("meta")
            if len(graph.users(n.id)) >= 2:
                seen.add("multi-use")
            for v in (*n.args, *n.kwargs.values()):
                _kinds(v, seen)

    collect()
    promised = {
        "placeholder", "get_attr", "call_function", "call_method", "call_module", "output",
        "operator.add", "torch.relu", "torch.cat", "view", "relu", "kwargs", "meta", "multi-use",
        "nan", "inf", "-0.0", "float", "int", "bool", "str", "quoted str", "tuple", "list",
        "dict", "Slice", "Sym", "NoneType", "ellipsis", "Ref",
    }
    assert promised <= seen, promised - seen


# ------------------------------------------------------------------ model recipes
RECIPE = ModelRecipe(
    seed=7, batch=2, channels=3, height=5, width=4,
    body=(Conv(4), BatchNorm(), ReLU(), Conv(4, 1, 2, False), Add(0), Cat(1), ReLU("function"), Pool("avg")),
    head=Head(Flatten("view"), (Linear(6), BatchNorm(), ReLU("method"), Add(0, "function"), Linear(3))),
)


def test_build_model_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    a, b = models.build_model(RECIPE), models.build_model(RECIPE)
    x = models.example_input(RECIPE)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(x, models.example_input(RECIPE))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert not a.training
    other = models.build_model(RECIPE._replace(seed=8))
    assert not torch.equal(other.conv0.weight, a.conv0.weight)
    # Batch norm is not the identity (a wrong fold must show).
    assert not torch.equal(a.bn1.running_var, torch.ones(4))


def test_model_traces_into_call_modules_and_runs_identically():
    model = models.build_model(RECIPE)
    gm = torch.fx.symbolic_trace(model)
    nodes = {(n.op, str(n.target)) for n in gm.graph.nodes}
    assert {("call_module", t) for t in ("conv0", "bn1", "act2", "conv3", "pool7", "fc9", "bn10", "fc13")} <= nodes
    assert {("call_function", "<built-in function add>"), ("call_method", "relu"), ("call_method", "view"),
            ("call_method", "size")} <= nodes
    assert any(op == "call_function" and "cat" in t for op, t in nodes)
    with torch.no_grad():
        out = model(models.example_input(RECIPE))
        assert out.shape == (2, 3)
        assert torch.equal(gm(models.example_input(RECIPE)), out)


@pytest.mark.parametrize("style", ["module", "function", "method", "view", "avgpool"])
def test_every_flatten_style(style):
    recipe = ModelRecipe(seed=1, batch=1, channels=2, height=1, width=1, body=(Pool("max"),),
                         head=Head(Flatten(style), (Cat(3), Linear(2))))
    model = models.build_model(recipe)
    with torch.no_grad():
        assert model(models.example_input(recipe)).shape == (1, 2)


def test_layers_in_the_wrong_place_are_refused():
    with pytest.raises(ValueError, match="put it in the head"):
        models.build_model(RECIPE._replace(body=(Linear(3),)))
    with pytest.raises(ValueError, match="cannot follow a Flatten"):
        models.build_model(RECIPE._replace(head=Head(Flatten(), (Conv(2),))))


@settings(max_examples=20, deadline=None)
@given(strategies.model_recipes())
def test_random_models_build_and_run(recipe):
    model = models.build_model(recipe)
    with torch.no_grad():
        out = model(models.example_input(recipe))
    assert out.shape[0] == recipe.batch and torch.isfinite(out).all()

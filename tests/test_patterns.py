"""Pattern language, tables, and coverage of torch.ao 2.13's backend configs."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.ao.quantization.backend_config.utils  # noqa: F401  (backend_config needs it loaded)
from quant_testkit import QCONFIGS, graph_of, modules_of
from torch.ao.quantization.backend_config import (
    ObservationType,
    get_fbgemm_backend_config,
    get_onednn_backend_config,
    get_qnnpack_backend_config,
)
from torch.ao.quantization.backend_config.x86 import get_x86_backend_config
from torch.ao.quantization.utils import MatchAllNode

from purequant.ir import ModuleSpec
from purequant.patterns import (
    ANY,
    DTypeConfig,
    Observation,
    Pat,
    PatternTable,
    default_table,
    entry,
    function,
    match_at,
    method,
    module,
    seq,
)
from purequant.qconfig.names import qualified_name, resolve_qualified_name

TORCH_BACKENDS = {
    "x86": get_x86_backend_config,
    "fbgemm": get_fbgemm_backend_config,
    "qnnpack": get_qnnpack_backend_config,
    "onednn": get_onednn_backend_config,
}
_OBS = {
    ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT: Observation.OWN_OUTPUT,
    ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT: Observation.SHARES_INPUT,
    ObservationType.INPUT_OUTPUT_NOT_OBSERVED: Observation.NONE,
}
_DTYPES = {torch.quint8: "quint8", torch.qint8: "qint8", torch.float: "float32",
           torch.float16: "float16", torch.quint4x2: "quint4x2", None: None}


# --------------------------------------------------------------- torch.ao -> our pattern
def _op(obj) -> Pat:
    if isinstance(obj, type) and issubclass(obj, MatchAllNode):
        return ANY
    if isinstance(obj, str):
        return Pat(method(obj))
    if isinstance(obj, type):
        return Pat(module(qualified_name(obj)))
    return Pat(function(qualified_name(obj)))


def _from_complex(p) -> Pat:
    if not isinstance(p, tuple):
        return _op(p)
    head = _op(p[0])
    return Pat(head.op, tuple(_from_complex(a) for a in p[1:]))


def _theirs(config) -> Pat:
    if config.pattern is None:
        return _from_complex(config._pattern_complex_format)
    if isinstance(config.pattern, tuple):
        return seq(*(_op(o).op for o in config.pattern))
    return _op(config.pattern)


def _covers(ours: Pat, theirs: Pat) -> bool:
    if theirs.is_any or ours.is_any:
        return theirs.is_any and ours.is_any
    if not set(theirs.op.keys()) <= set(ours.op.keys()) or len(ours.args) != len(theirs.args):
        return False
    return all(_covers(a, b) for a, b in zip(ours.args, theirs.args))


def _covering(table: PatternTable, theirs: Pat):
    key = next(iter(theirs.op.keys()))
    return [e for e in table.index.get(key, ()) if _covers(e.pattern, theirs)]


def _their_dtypes(config) -> set:
    out = set()
    for dc in config.dtype_configs:
        act_c, w_c = dc.input_dtype_with_constraints, dc.weight_dtype_with_constraints
        out.add((_DTYPES[dc.input_dtype], _DTYPES[dc.weight_dtype], bool(dc.is_dynamic),
                 act_c.scale_min_lower_bound, w_c.quant_min_lower_bound, w_c.quant_max_upper_bound))
    return out


def _our_dtypes(e) -> set:
    out = set()
    for dc in e.dtype_configs:
        a, w = dc.activation_constraint, dc.weight_constraint
        out.add((dc.activation, dc.weight, dc.is_dynamic, a.scale_min if a else None,
                 w.quant_min if w else None, w.quant_max if w else None))
    return out


@pytest.mark.parametrize("backend", sorted(TORCH_BACKENDS))
def test_every_torch_ao_pattern_is_covered(backend):
    """Each BackendPatternConfig of torch.ao is matched by one of our entries, same dtypes."""
    table = default_table(backend)
    configs = TORCH_BACKENDS[backend]().configs
    assert len(configs) > 100
    missing, dtype_diffs = [], []
    for config in configs:
        theirs = _theirs(config)
        found = _covering(table, theirs)
        if not found:
            missing.append(str(theirs))
            continue
        if not any(_our_dtypes(e) == _their_dtypes(config) for e in found):
            dtype_diffs.append((str(theirs), [e.name for e in found]))
    assert not missing, f"{backend}: torch.ao patterns we do not cover: {missing}"
    assert not dtype_diffs, f"{backend}: accepted dtypes differ: {dtype_diffs}"


@pytest.mark.parametrize("backend", sorted(TORCH_BACKENDS))
def test_observation_kinds_and_weight_positions_follow_torch_ao(backend):
    table = default_table(backend)
    for config in TORCH_BACKENDS[backend]().configs:
        for e in _covering(table, _theirs(config)):
            want = _OBS[config.observation_type]
            if e.by_tensor_args:  # add/mul: torch.ao decides by tensor count too
                assert e.by_tensor_args[2] is Observation.OWN_OUTPUT and e.by_tensor_args[1] is Observation.SHARES_INPUT
            elif e.observation is Observation.FIXED:
                assert e.handler == "fixed_qparams"
            elif e.name in ("embedding", "embedding_bag"):
                assert e.observation is Observation.NONE  # float activations: nothing to observe
            elif e.name == "dropout":
                assert want is Observation.OWN_OUTPUT
            else:
                assert e.observation is want, (e.name, want)
            index = config._input_type_to_index
            if "weight" in index:
                assert e.weight_arg[0] == index["weight"] and e.bias_arg[0] == index["bias"], e.name


@pytest.mark.parametrize("backend", sorted(TORCH_BACKENDS))
def test_every_name_is_canonical(backend):
    """Module and function names resolve and re-qualify to themselves; methods exist."""
    for kind, name in default_table(backend).covered():
        if kind == "method":
            # torch.ao lists `x.hardsigmoid()`, which Tensor does not have; kept for parity.
            assert hasattr(torch.Tensor, name) or name in ("hardsigmoid", "hardsigmoid_"), name
        else:
            assert qualified_name(resolve_qualified_name(name)) == name, name


def test_backend_differences():
    x86, fb, qn, one = (default_table(b) for b in ("x86", "fbgemm", "qnnpack", "onednn"))
    assert "size" in x86 and "size" in fb and "size" not in qn and "size" not in one
    assert "conv2d_add_left" in one and "conv2d_add_left" not in x86
    assert "linear_tanh" in one and "linear_leaky_relu" in one
    assert {dc.activation for dc in qn.get("conv2d").dtype_configs} == {"qint8", "quint8"}
    assert not any(dc.activation == "float16" for dc in one.get("linear").dtype_configs)
    assert x86.get("add").dtype_configs[0].weight == "qint8" and fb.get("add").dtype_configs[0].weight is None
    assert {dc.weight for dc in one.get("embedding").dtype_configs} == {"qint8"}


# ------------------------------------------------------------------------------ the table
def test_sorted_by_priority_then_name_and_indexed():
    t = default_table("x86")
    keys = [(-e.priority, e.name) for e in t.entries]
    assert keys == sorted(keys)
    relu = t.index[("module", "torch.nn.ReLU")]
    names = [e.name for e in relu]
    assert names.index("conv2d_bn_relu") < names.index("conv2d_relu") < names.index("relu")
    assert t.get("conv2d_bn_relu").priority > t.get("conv2d_relu").priority > t.get("conv2d").priority


def test_tables_are_values():
    t = default_table("x86")
    assert default_table("x86") is t and hash(t) == hash(PatternTable.of(t.entries, name="x86"))
    assert PatternTable.of(reversed(t.entries), name="x86") == t
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        t.entries[0].priority = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="named 'relu'"):
        PatternTable.of([t.get("relu"), t.get("relu")])
    with pytest.raises(ValueError, match="unknown backend"):
        default_table("cuda")


def test_custom_table_adds_replaces_removes():
    base = default_table("x86")
    swish = entry("silu", Pat(function("torch.nn.functional.silu")), 100, Observation.OWN_OUTPUT,
                  [DTypeConfig("quint8")], "default_op")
    t = base.with_entries(swish, name="mine")
    assert "silu" in t and t.name == "mine" and "silu" not in base
    assert t.candidates(graph_of("%x = placeholder x()\n%s = call_function torch.nn.functional.silu(%x)\n%output = output output(%s)\n").node("s"), {}) == (swish,)
    assert swish.source.startswith("tests/test_patterns.py:") or "test_patterns.py:" in swish.source
    louder = attrs.evolve(base.get("relu"), priority=1000)
    assert base.with_entries(louder).index[("module", "torch.nn.ReLU")][0].name == "relu"
    assert "relu" not in base.without("relu")
    with pytest.raises(KeyError, match="nope"):
        base.without("nope")


def test_explain_names_pattern_priority_and_source():
    text = default_table("x86").explain("conv2d_bn_relu")
    assert "conv2d_bn_relu: {nn.ReLU|F.relu} <- nn.BatchNorm2d <- nn.Conv2d" in text
    assert "priority 300" in text and "defined at purequant/patterns/defaults.py:" in text


def test_pattern_printing_and_seq():
    conv, bn, relu = module("torch.nn.Conv2d"), module("torch.nn.BatchNorm2d"), function("torch.nn.functional.relu")
    assert seq(conv, bn, relu) == Pat(relu, (Pat(bn, (Pat(conv),)),))
    assert str(seq(conv, bn, relu)) == "F.relu <- nn.BatchNorm2d <- nn.Conv2d"
    assert str(Pat(function("operator.add"), (Pat(conv), ANY))) == "operator.add(nn.Conv2d, *)"
    assert seq(conv, bn, relu).size() == 3 and ANY.size() == 0
    with pytest.raises(ValueError):
        entry("bad", ANY, 1, Observation.NONE, [], "x")


# ---------------------------------------------------------------------------- match_at
CHAIN = """\
%x = placeholder x()
%conv = call_module conv(%x)  # type='torch.nn.Conv2d'
%bn = call_module bn(%conv)  # type='torch.nn.BatchNorm2d'
%relu = call_function torch.nn.functional.relu(%bn, inplace=True)
%add = call_function operator.add(%relu, 1.0)
%output = output output(%add)
"""


def test_match_at_reverse_nested_chain():
    g = graph_of(CHAIN)
    mods = modules_of(g)
    pat = seq(module("torch.nn.Conv2d"), module("torch.nn.BatchNorm2d"), function("torch.nn.functional.relu"))
    assert match_at(pat, g, mods, "relu") == (("conv", "bn", "relu"), "conv")
    assert match_at(pat, g, mods, "bn") is None
    add_any = Pat(function("operator.add"), (Pat(function("torch.nn.functional.relu")), ANY))
    assert match_at(add_any, g, mods, "add") == (("relu", "add"), "relu")
    # A non-node argument only matches ANY.
    add_two = Pat(function("operator.add"), (ANY, Pat(function("torch.nn.functional.relu"))))
    assert match_at(add_two, g, mods, "add") is None


def test_match_at_single_user_rule_applies_to_inner_nodes_only():
    g = graph_of(CHAIN.replace("%output = output output(%add)", "%output = output output((%add, %bn))"))
    mods = modules_of(g)
    pat = seq(module("torch.nn.Conv2d"), module("torch.nn.BatchNorm2d"), function("torch.nn.functional.relu"))
    assert match_at(pat, g, mods, "relu") is None  # %bn escapes the pattern
    assert match_at(seq(module("torch.nn.Conv2d"), module("torch.nn.BatchNorm2d")), g, mods, "bn") is not None


def test_match_at_same_node_twice_fails():
    g = graph_of("%x = placeholder x()\n%r = call_module r(%x)  # type='torch.nn.ReLU'\n"
                 "%a = call_function operator.add(%r, %r)\n%output = output output(%a)\n")
    relu = Pat(module("torch.nn.ReLU"))
    assert match_at(Pat(function("operator.add"), (relu, relu)), g, modules_of(g), "a") is None


def test_module_type_from_specs_or_meta():
    g = graph_of("%x = placeholder x()\n%c = call_module c(%x)\n%output = output output(%c)\n")
    pat = Pat(module("torch.nn.Conv2d"))
    assert match_at(pat, g, {}, "c") is None
    assert match_at(pat, g, {"c": ModuleSpec("torch.nn.Conv2d")}, "c") == (("c",), "c")


def test_dtype_configs_accept_and_explain():
    t = default_table("x86")
    assert t.get("conv2d").rejection(QCONFIGS["static"]) is None
    assert "float16" in t.get("conv2d").rejection(QCONFIGS["fp16"])
    assert t.get("linear").rejection(QCONFIGS["dynamic"]) is None
    assert "quint8 dynamic/qint8 weight not supported" in t.get("conv2d").rejection(QCONFIGS["dynamic"])
    assert t.get("embedding").rejection(QCONFIGS["weight_only"]) is None
    # qnnpack's symmetric qint8 config needs weights in [-127, 127]: full-range qint8 fails it.
    q = default_table("qnnpack").get("conv2d")
    why = q.rejection(QCONFIGS["qint8"])
    assert "not within [-127, 127]" in why


def test_docs_table_is_generated_from_the_default_table():
    from pathlib import Path

    from purequant.patterns.describe import BEGIN, END, table_markdown

    text = (Path(__file__).parent.parent / "docs" / "patterns.md").read_text()
    generated = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
    assert generated.strip() == table_markdown(default_table("x86")).strip(), (
        "docs/patterns.md is stale: regenerate the table with table_markdown(default_table('x86'))"
    )


def test_docs_custom_table_example_runs():
    silu = entry(
        "silu", Pat(function("torch.nn.functional.silu") | module("torch.nn.SiLU")),
        priority=100, observation=Observation.OWN_OUTPUT,
        dtype_configs=[DTypeConfig("quint8")], handler="default_op",
    )
    table = default_table("x86").with_entries(silu, name="x86+silu").without("dropout")
    assert "silu" in table and "dropout" not in table and table.name == "x86+silu"
    assert qualified_name(resolve_qualified_name("torch.nn.SiLU")) == "torch.nn.SiLU"

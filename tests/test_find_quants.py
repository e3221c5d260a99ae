"""find_quants: goldens, sharing, fixed qparams, dynamic, weights, no double observation."""

from __future__ import annotations

import pytest
from quant_testkit import (
    GOLDENS,
    QCONFIGS,
    cases,
    format_plan,
    golden,
    graph_of,
    modules_of,
    qconfigs_of,
)

from purequant.ir import print_graph
from purequant.patterns import default_table
from purequant.stages.find_matches import find_matches
from purequant.stages.find_quants import find_quants


def plan_of(text: str, table: str = "x86"):
    g = graph_of(text)
    result = find_matches(g, modules_of(g), default_table(table), qconfigs_of(g))
    return g, find_quants(g, result)


def _read(name: str) -> str:
    return (GOLDENS / "find_quants" / f"{name}.before").read_text()


@pytest.mark.parametrize("name", cases("find_quants"))
def test_golden(name):
    g, plan = plan_of(_read(name))
    golden("find_quants", f"{name}.plan", format_plan(g, plan))


def test_shares_input_chains_point_at_one_observer():
    g, plan = plan_of(_read("chain_shares"))
    assert plan.shares == {"pool": "conv3", "flatten": "conv3"}
    assert set(plan.observe) == {"x", "relu1", "relu2", "conv3", "fc"}
    assert all(o in plan.observe for o in plan.shares.values())


def test_cat_inputs_and_output_share_the_first_inputs_observer():
    g, plan = plan_of(_read("cat_fixed"))
    assert plan.shares["cat"] == "sig" and plan.shares["flatten"] == "sig" and plan.shares["tanh"] == "sig"
    assert plan.shares["pool"] == "relu"  # pool keeps relu's observer: only the cat edge moved
    sig = plan.observe["sig"].spec
    assert sig.kind == "fixed" and sig.option("scale") == 1 / 256 and sig.option("zero_point") == 0
    assert "tanh" not in plan.observe and "dropping output fixed/quint8" in plan.notes["tanh"]


def test_orphans_keep_the_observer_they_shared():
    g, plan = plan_of(_read("orphan"))
    # conv gave its observer up to the cat's first input; pool, which shared it, inherits it.
    assert plan.shares["conv"] == "y" and plan.shares["cat"] == "y"
    assert plan.observe["pool"].requested_by == "conv" and plan.shares["flat"] == "pool"


def test_dynamic_observes_weights_only():
    g, plan = plan_of(_read("dynamic"))
    assert set(plan.dynamic) == {"lstm", "fc"} and not plan.observe
    assert set(plan.weights) == {"emb", "lstm", "fc"}
    assert plan.weights["emb"].qscheme == "per_channel_affine_float_qparams"


def test_functional_weights():
    g, plan = plan_of(_read("functional_weights"))
    assert plan.weights["w"] == QCONFIGS["static"].weight  # a parameter: no observer node
    assert plan.observe["scaled"].is_weight and plan.observe["scaled"].role == "weight"
    assert "ln_w" not in plan.weights and "ln_w" not in plan.observe  # norm weights stay float
    assert "b" not in plan.observe and "b" not in plan.weights  # bias stays float


def test_each_value_observed_once():
    g, plan = plan_of(_read("no_double"))
    assert plan.observe["x"].requested_by == "conv1"  # conv2, conv3 and add re-use it
    assert "x" not in plan.shares and "x" not in plan.notes  # conv3's minmax: same dtype


def test_conflicting_dtype_request_is_noted_not_applied():
    text = (
        "%x = placeholder x()\n"
        "%conv = call_module conv(%x)  # type='torch.nn.Conv2d'\n"
        "%add = call_function operator.add(%conv, %x)  # qconfig='qint8_sym'\n"
        "%output = output output(%add)\n"
    )
    g, plan = plan_of(text, "qnnpack")
    assert plan.observe["conv"].spec.dtype == "quint8" and plan.observe["add"].spec.dtype == "qint8"
    assert "%add asked for input minmax/qint8; kept output histogram/quint8 from %conv" == plan.notes["conv"]


def test_reuse_input_observes_nothing_new():
    g, plan = plan_of(_read("reuse_input"))
    assert "reshape" not in plan.observe and "reshape" not in plan.shares and "silu" not in plan.observe
    assert plan.shares == {"reshape_1": "conv", "view": "conv"}


def test_graph_outputs_request_nothing():
    g, plan = plan_of("%x = placeholder x()\n%output = output output(%x)\n")
    assert plan.is_empty


def test_pure_and_deterministic():
    text = _read("cat_fixed")
    g = graph_of(text)
    before = print_graph(g)
    r = find_matches(g, modules_of(g), default_table("x86"), qconfigs_of(g))
    assert find_quants(g, r) == find_quants(g, r) and print_graph(g) == before


# ----------------------------------------------------------- parity with torch.ao prepare_fx
def _torch_ao_groups(model, example) -> set[frozenset[str]]:
    """Values observed by one observer module in torch.ao's prepare_fx, as sets of fx names."""
    import copy
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.observer import ObserverBase
    from torch.ao.quantization.quantize_fx import prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), example)
    mods = dict(gm.named_modules(remove_duplicate=False))
    groups: dict[int, set[str]] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module" and isinstance(mods[n.target], ObserverBase):
            src = n.args[0]
            while src.op == "call_module" and isinstance(mods[src.target], ObserverBase):
                src = src.args[0]
            groups.setdefault(id(mods[n.target]), set()).add(src.name)
    return {frozenset(v) for v in groups.values()}


def _our_groups(model) -> set[frozenset[str]]:
    import purequant
    from purequant.qconfig import default_qconfig_spec
    from purequant.stages.fuse import fuse
    from purequant.stages.generate_qconfig_map import generate_qconfig_map
    from purequant.stages.insert_observers import insert_observers

    tr = purequant.trace(model)
    g, _, modules, _ = fuse(tr.graph, tr.params, tr.modules)
    qmap = generate_qconfig_map(g, modules, qconfig=default_qconfig_spec("x86")).qconfigs
    _, rec = insert_observers(g, find_quants(g, find_matches(g, modules, default_table("x86"), qmap)))
    groups = {o: {s.value_id} for o, s in rec.slots.items()}
    for v, o in rec.shares.items():
        groups[o].add(v)
    return {frozenset(v) for v in groups.values()}


@pytest.mark.parametrize("name", ["digits", "mlp", "lstm", "resnet18", "mobilenet_v2", "bert"])
def test_observer_groups_match_torch_ao_prepare_fx(name):
    """Same values observed, grouped the same way, as torch.ao 2.13 with its default x86
    mapping (fx node names are our ids). BERT's one difference is deliberate: its CLS slice
    `x[:, 0]` shares its input's observer here (getitem is a shares-qparams entry), where
    torch.ao, which has no getitem pattern, gives the slice an observer of its own."""
    from purequant.models import registry

    entry = registry.get(name)
    model = entry.build()
    theirs, ours = _torch_ao_groups(model, entry.example_inputs()), _our_groups(model)
    if name == "bert":
        assert theirs - ours == {frozenset({"getitem"}), frozenset({"layers_3_ffn_norm"})}
        assert ours - theirs == {frozenset({"getitem", "layers_3_ffn_norm"})}
    else:
        assert ours == theirs

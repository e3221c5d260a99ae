"""Tests for purequant.qconfig: names, specs, conversion, resolution, defaults, CPU detection."""

from __future__ import annotations

import json
import math
import operator
import warnings

import pytest
import torch
import torch.ao.quantization as tq
import torch.nn as nn
import torch.nn.functional as F
from attrs.exceptions import FrozenInstanceError
from torch.ao.quantization import QConfigMapping
from torch.ao.quantization.fx import qconfig_mapping_utils as tq_utils
from torch.ao.quantization.qconfig import QConfigDynamic
from torch.ao.quantization.quantize_fx import prepare_fx

from purequant.observers.spec import ObserverSpec
from purequant.qconfig import (
    BACKENDS,
    LEVELS,
    CpuAwareDefault,
    Decision,
    QConfig,
    QConfigError,
    QConfigSpec,
    backend_default_qconfig,
    cpu_aware_default,
    default_dynamic_qconfig_spec,
    default_qconfig_spec,
    detect_vnni,
    embedding_qconfig_spec,
    float16_qconfig_spec,
    layer,
    resolve,
    resolve_function,
    resolve_method,
    resolve_module,
    to_qconfig_spec,
)
from purequant.qconfig._torch_reader import observer_spec_from_torch, qconfig_from_torch
from purequant.qconfig.cpu import read_cpu_flags
from purequant.qconfig.defaults import DEFAULT_DYNAMIC, FIXED_QPARAMS_OPS, FLOAT16_DYNAMIC
from purequant.qconfig.errors import QualifiedNameError
from purequant.qconfig.names import object_type_key, qualified_name, resolve_qualified_name

# --- names ----------------------------------------------------------------------------------

NAMED = [
    (torch.add, "torch.add"),
    (torch.cat, "torch.cat"),
    (torch.flatten, "torch.flatten"),
    (torch.matmul, "torch.matmul"),
    (torch.sigmoid, "torch.sigmoid"),
    (F.linear, "torch.nn.functional.linear"),
    (F.relu, "torch.nn.functional.relu"),
    (F.gelu, "torch.nn.functional.gelu"),
    (F.layer_norm, "torch.nn.functional.layer_norm"),
    (F.max_pool2d, "torch.nn.functional.max_pool2d"),  # a boolean_dispatch closure
    (F.conv2d, "torch.conv2d"),  # F.conv2d *is* torch.conv2d: one object, one name
    (operator.add, "operator.add"),
    (operator.getitem, "operator.getitem"),
    (getattr, "builtins.getattr"),
    (math.sqrt, "math.sqrt"),
    (torch.Tensor.view, "torch.Tensor.view"),
    (torch.Tensor.relu, "torch.Tensor.relu"),
    (torch.Tensor, "torch.Tensor"),
    (nn.Conv2d, "torch.nn.Conv2d"),
    (nn.Linear, "torch.nn.Linear"),
    (nn.LSTM, "torch.nn.LSTM"),
    (torch.ao.nn.intrinsic.ConvReLU2d, "torch.ao.nn.intrinsic.ConvReLU2d"),
    (torch.ao.nn.quantized.Linear, "torch.ao.nn.quantized.Linear"),
    (torch.linalg.norm, "torch.linalg.norm"),  # renamed re-export of torch._C._linalg
    (torch.ops.quantized.add, "torch.ops.quantized.add"),
    (torch.ops.aten.add.Tensor, "torch.ops.aten.add.Tensor"),
]


@pytest.mark.parametrize(("obj", "name"), NAMED, ids=[n for _, n in NAMED])
def test_qualified_name_is_canonical_and_round_trips(obj, name):
    assert qualified_name(obj) == name
    assert resolve_qualified_name(name) is obj


def test_non_canonical_spellings_resolve_to_the_same_object():
    assert resolve_qualified_name("torch.nn.modules.conv.Conv2d") is nn.Conv2d
    assert resolve_qualified_name("_operator.add") is operator.add
    assert resolve_qualified_name("torch.nn.functional.conv2d") is torch.conv2d


def test_object_type_key_canonicalises_strings_and_methods():
    assert object_type_key(nn.Conv2d) == "torch.nn.Conv2d"
    assert object_type_key("torch.nn.modules.conv.Conv2d") == "torch.nn.Conv2d"
    assert object_type_key("torch.nn.functional.conv2d") == "torch.conv2d"
    # Tensor methods are keyed by bare name, as torch.fx records call_method targets.
    assert object_type_key(torch.Tensor.relu) == "relu"
    assert object_type_key("Tensor.relu") == "relu"
    assert object_type_key("torch.Tensor.reshape") == "reshape"
    assert object_type_key("reshape") == "reshape"
    # Not importable here: kept verbatim (it may name a user class of another process).
    assert object_type_key("mypkg.blocks.Block") == "mypkg.blocks.Block"


def test_local_class_has_a_best_effort_key_but_no_strict_name():
    def make():
        class Block(nn.Module):
            pass

        return Block

    block = make()
    with pytest.raises(QualifiedNameError, match="Block"):
        qualified_name(block)
    assert qualified_name(block, strict=False).endswith("<locals>.Block")
    assert object_type_key(block) == qualified_name(block, strict=False)


def test_name_errors_are_clear():
    with pytest.raises(QualifiedNameError, match="not a qualified name"):
        resolve_qualified_name("relu")
    with pytest.raises(QualifiedNameError, match="has no attribute 'Conv9d'"):
        resolve_qualified_name("torch.nn.Conv9d")
    with pytest.raises(QualifiedNameError, match="'nosuchmodule_xyz' does not import"):
        resolve_qualified_name("nosuchmodule_xyz.f")
    with pytest.raises(QualifiedNameError, match="pass its class instead"):
        object_type_key(nn.Linear(2, 2))
    with pytest.raises(QualifiedNameError, match="not a class or function"):
        object_type_key("torch.nn")
    with pytest.raises(QualifiedNameError, match="object_type_key"):
        qualified_name("torch.add")


# --- QConfig and QConfigSpec values ---------------------------------------------------------


def qc(k: int, name: str | None = None) -> QConfig:
    """A distinct QConfig per k (distinct by content, since names are outside equality)."""
    return QConfig(
        ObserverSpec("minmax", quant_min=0, quant_max=100 + k),
        ObserverSpec("minmax", dtype="qint8"),
        name,
    )


def test_qconfig_helpers_and_json_round_trip():
    static = backend_default_qconfig("x86")
    assert not static.is_dynamic
    assert (static.activation_dtype, static.weight_dtype) == ("quint8", "qint8")
    assert DEFAULT_DYNAMIC.is_dynamic and DEFAULT_DYNAMIC.activation_dtype == "quint8"
    assert FLOAT16_DYNAMIC.is_dynamic and FLOAT16_DYNAMIC.weight_dtype == "float16"
    weight_only = QConfig(None, ObserverSpec("minmax", dtype="qint8"))
    assert weight_only.activation_dtype == "float32" and not weight_only.is_dynamic
    for q in (static, DEFAULT_DYNAMIC, weight_only, QConfig()):
        data = json.loads(json.dumps(q.to_json()))
        assert QConfig.from_json(data) == q
        assert QConfig.from_json(data).name == q.name


def test_qconfig_name_is_outside_equality_and_values_are_frozen():
    assert qc(1, "a") == qc(1, "b") and hash(qc(1, "a")) == hash(qc(1, "b"))
    assert qc(1) != qc(2)
    with pytest.raises(FrozenInstanceError):
        qc(1).name = "x"
    with pytest.raises(TypeError):
        QConfig(activation="minmax")


def test_spec_set_methods_return_new_specs_and_canonicalise_keys():
    empty = QConfigSpec()
    spec = empty.set_object_type(nn.modules.conv.Conv2d, qc(1)).set_module_name("a", None)
    assert empty == QConfigSpec() and spec is not empty
    assert dict(spec.object_type) == {"torch.nn.Conv2d": qc(1)}
    spec = spec.set_module_name_object_type_order("a", F.linear, 0, qc(2))
    assert ("a", "torch.nn.functional.linear", 0) in spec.module_name_object_type_order


def test_re_setting_a_regex_keeps_its_registration_place():
    spec = QConfigSpec().set_module_name_regex("a.*", qc(1)).set_module_name_regex("b.*", qc(2))
    spec = spec.set_module_name_regex("a.*", qc(3))
    assert spec.module_name_regex == (("a.*", qc(3)), ("b.*", qc(2)))


def test_spec_json_round_trip_and_equal_specs_give_equal_json():
    spec = to_qconfig_spec(
        {
            "": qc(0),
            "object_type": [(nn.Linear, qc(1)), ("reshape", None)],
            "module_name_regex": [("z.*", qc(2)), ("a.*", qc(3))],
            "module_name": [("a.b", qc(4)), ("a", None)],
            "module_name_object_type_order": [("a", torch.add, 2, qc(5))],
        }
    )
    data = json.loads(json.dumps(spec.to_json()))
    assert QConfigSpec.from_json(data) == spec
    # Insertion order of unordered levels does not leak into equality or JSON.
    other = QConfigSpec().set_module_name("a", None).set_module_name("a.b", qc(4))
    assert other.module_name == spec.module_name
    assert default_qconfig_spec("x86").to_json() == default_qconfig_spec("x86").to_json()


def test_spec_rejects_invalid_entries():
    with pytest.raises(QConfigError, match="does not compile"):
        QConfigSpec(module_name_regex=(("a(", None),))
    with pytest.raises(QConfigError, match="never matches"):
        QConfigSpec().set_module_name("", qc(1))
    with pytest.raises(QConfigError, match="index: int >= 0"):
        QConfigSpec().set_module_name_object_type_order("a", "torch.add", -1, None)
    with pytest.raises(QConfigError, match="expected a purequant QConfig"):
        QConfigSpec().set_module_name("a", "not a qconfig")


# --- precedence -------------------------------------------------------------------------------


def full_spec() -> QConfigSpec:
    """One entry per level, all applying to module 'blk.sub' and torch.nn.Linear call #1."""
    return (
        QConfigSpec()
        .set_global(qc(0))
        .set_object_type(nn.Linear, qc(1))
        .set_module_name_regex("blk", qc(2))
        .set_module_name("blk.sub", qc(3))
        .set_module_name_object_type_order("blk.sub", nn.Linear, 1, qc(4))
    )


def test_every_level_beats_the_ones_below():
    spec = full_spec()
    where = {"module_path": "blk.sub", "object_type": "torch.nn.Linear", "type_order_index": 1}
    expected = list(zip(LEVELS, [qc(i) for i in range(5)]))
    # Drop the highest level one at a time: the next one down decides.
    decisions = [
        resolve(spec, **where),
        resolve(
            QConfigSpec(
                spec.global_qconfig, spec.object_type, spec.module_name_regex, spec.module_name
            ),
            **where,
        ),
        resolve(
            QConfigSpec(spec.global_qconfig, spec.object_type, spec.module_name_regex), **where
        ),
        resolve(QConfigSpec(spec.global_qconfig, spec.object_type), **where),
        resolve(QConfigSpec(spec.global_qconfig), **where),
    ]
    got = [(d.level, d.qconfig) for d in decisions]
    assert got == list(reversed(expected))
    assert decisions[0].shadowed == (
        ("global", ""),
        ("object_type", "torch.nn.Linear"),
        ("module_name_regex", "blk"),
        ("module_name", "blk.sub"),
    )
    assert resolve(QConfigSpec(), **where).level == "none"
    assert resolve(QConfigSpec(), **where).qconfig is None


def test_a_none_entry_overrides_lower_levels_and_leaves_float():
    spec = QConfigSpec().set_global(qc(0)).set_object_type("torch.add", None)
    d = resolve(spec, module_path="", object_type="torch.add")
    assert (d.level, d.entry, d.qconfig) == ("object_type", "torch.add", None)
    assert "left float" in d.reason


def test_regex_first_registered_wins_and_uses_re_match():
    spec = QConfigSpec().set_module_name_regex("foo.*bar.*conv[0-9]+", qc(1))
    spec = spec.set_module_name_regex("foo.*bar.*", qc(2)).set_module_name_regex("foo.*", qc(3))
    # The example of torch.ao's QConfigMapping.set_module_name_regex docstring.
    assert resolve(spec, module_path="foo.bar.conv0", object_type="x").qconfig == qc(1)
    assert resolve(spec, module_path="foo.bar.linear", object_type="x").qconfig == qc(2)
    assert resolve(spec, module_path="foo.baz.relu", object_type="x").qconfig == qc(3)
    # re.match: anchored at the start, not at the end; no match in the middle.
    only = QConfigSpec().set_module_name_regex("conv", qc(1))
    assert resolve(only, module_path="conv1.sub", object_type="x").qconfig == qc(1)
    assert resolve(only, module_path="features.conv", object_type="x").level == "none"


def test_module_name_covers_children_but_the_most_specific_name_wins():
    spec = QConfigSpec().set_module_name("a.b", qc(1)).set_module_name("a.b.c.d", qc(2))
    assert resolve(spec, module_path="a.b", object_type="x").entry == "a.b"
    assert resolve(spec, module_path="a.b.c", object_type="x").entry == "a.b"
    assert resolve(spec, module_path="a.b.c.d.e", object_type="x").entry == "a.b.c.d"
    assert (
        resolve(spec, module_path="a.bc", object_type="x").level == "none"
    )  # prefix of a name is not a parent
    assert resolve(spec, module_path="a", object_type="x").level == "none"
    assert "covers 'a.b.c'" in resolve(spec, module_path="a.b.c", object_type="x").reason


def test_order_entries_need_the_exact_path_type_and_index():
    spec = QConfigSpec().set_module_name_object_type_order("blk", F.linear, 1, qc(1))
    hit = resolve(
        spec, module_path="blk", object_type="torch.nn.functional.linear", type_order_index=1
    )
    assert hit.entry == ("blk", "torch.nn.functional.linear", 1)
    for path, index in (("blk", 0), ("blk", None), ("blk.sub", 1), ("", 1)):
        d = resolve(
            spec, module_path=path, object_type="torch.nn.functional.linear", type_order_index=index
        )
        assert d.level == "none", (path, index)


def test_enclosing_module_type_beats_the_function_type_like_torch_ao():
    spec = QConfigSpec().set_object_type(torch.add, qc(1)).set_object_type("mymodels.Block", qc(2))
    d = resolve_function(spec, scope_path="blk", scope_type="mymodels.Block", function="torch.add")
    assert (d.qconfig, d.entry) == (qc(2), "mymodels.Block")
    d = resolve_function(spec, scope_path="", scope_type="mymodels.Other", function="torch.add")
    assert (d.qconfig, d.entry) == (qc(1), "torch.add")
    d = resolve_method(spec, scope_path="blk", scope_type="mymodels.Other", method="relu")
    assert d.level == "none"


def test_call_module_counts_its_index_in_the_parent():
    spec = QConfigSpec().set_module_name_object_type_order("blk", nn.Linear, 0, qc(1))
    d = resolve_module(
        spec, module_path="blk.fc", module_type="torch.nn.Linear", type_order_index=0
    )
    assert d.entry == ("blk", "torch.nn.Linear", 0)


def test_decision_serialises():
    d = resolve(
        full_spec(), module_path="blk.sub", object_type="torch.nn.Linear", type_order_index=1
    )
    data = json.loads(json.dumps(d.to_json()))
    assert data["level"] == "module_name_object_type_order"
    assert data["entry"] == ["blk.sub", "torch.nn.Linear", 1]
    assert isinstance(d, Decision) and "call #1 of torch.nn.Linear" in d.reason


# --- conversion of every accepted form ----------------------------------------------------------


def torch_qc(k: int) -> tq.QConfig:
    """A distinct torch.ao QConfig per k, mirroring qc(k)."""
    return tq.QConfig(
        activation=tq.MinMaxObserver.with_args(quant_min=0, quant_max=100 + k),
        weight=tq.MinMaxObserver.with_args(dtype=torch.qint8),
    )


def test_torch_qc_mirrors_qc():
    assert qconfig_from_torch(torch_qc(3), where="t") == qc(3)


def test_dict_form_of_1_7_with_lists_and_with_dicts():
    as_lists = {
        "": torch_qc(0),
        "object_type": [(nn.Linear, torch_qc(1)), (F.relu, None), ("reshape", torch_qc(2))],
        "module_name_regex": [("blk.*", torch_qc(3))],
        "module_name": [("blk.sub", None)],
        "module_name_object_type_order": [("blk", torch.add, 0, torch_qc(4))],
    }
    expected = (
        QConfigSpec()
        .set_global(qc(0))
        .set_object_type("torch.nn.Linear", qc(1))
        .set_object_type("torch.nn.functional.relu", None)
        .set_object_type("reshape", qc(2))
        .set_module_name_regex("blk.*", qc(3))
        .set_module_name("blk.sub", None)
        .set_module_name_object_type_order("blk", "torch.add", 0, qc(4))
    )
    assert to_qconfig_spec(as_lists) == expected
    as_dicts = {
        "": torch_qc(0),
        "object_type": {nn.Linear: torch_qc(1), F.relu: None, "reshape": torch_qc(2)},
        "module_name_regex": {"blk.*": torch_qc(3)},
        "module_name": {"blk.sub": None},
        "module_name_object_type_order": {("blk", torch.add, 0): torch_qc(4)},
    }
    assert to_qconfig_spec(as_dicts) == expected
    assert to_qconfig_spec({}) == QConfigSpec()


def test_torch_qconfig_objects_are_global():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # QConfigDynamic is deprecated upstream
        dyn = QConfigDynamic(weight=tq.default_weight_observer)
    assert to_qconfig_spec(dyn) == QConfigSpec(
        global_qconfig=QConfig(None, qconfig_from_torch(dyn, where="").weight)
    )
    assert to_qconfig_spec(tq.float16_dynamic_qconfig).global_qconfig == FLOAT16_DYNAMIC
    assert to_qconfig_spec(tq.default_dynamic_qconfig).global_qconfig == DEFAULT_DYNAMIC
    assert (
        to_qconfig_spec(tq.default_dynamic_qconfig).global_qconfig.name
        == "torch.ao.quantization.default_dynamic_qconfig"
    )
    assert to_qconfig_spec(qc(5)) == QConfigSpec(global_qconfig=qc(5))


def test_torch_qconfig_mapping_converts_every_level():
    mapping = (
        QConfigMapping()
        .set_global(torch_qc(0))
        .set_object_type(nn.Conv2d, torch_qc(1))
        .set_module_name_regex("z.*", torch_qc(2))
        .set_module_name_regex("a.*", None)
        .set_module_name("a.b", torch_qc(3))
        .set_module_name_object_type_order("a", F.linear, 2, torch_qc(4))
    )
    spec = to_qconfig_spec(mapping)
    assert spec.module_name_regex == (("z.*", qc(2)), ("a.*", None))
    assert spec.object_type == QConfigSpec().set_object_type(nn.Conv2d, qc(1)).object_type
    assert dict(spec.module_name) == {"a.b": qc(3)}
    assert dict(spec.module_name_object_type_order) == {
        ("a", "torch.nn.functional.linear", 2): qc(4)
    }
    assert spec.global_qconfig == qc(0)


def test_own_spec_is_returned_as_is_and_none_means_float():
    spec = full_spec()
    assert to_qconfig_spec(spec) is spec
    assert to_qconfig_spec(None) == QConfigSpec()
    assert resolve(to_qconfig_spec(None), module_path="a", object_type="x").qconfig is None
    cpu = cpu_aware_default("x86", flags={"avx2"})
    assert to_qconfig_spec(cpu) is cpu.spec


def test_backend_default_is_a_base_the_user_entries_override():
    user = {"object_type": [(nn.LayerNorm, None)], "module_name_regex": [("head.*", None)]}
    spec = to_qconfig_spec(user, backend_default="x86")
    base = default_qconfig_spec("x86")
    assert spec.global_qconfig == base.global_qconfig  # the user set no global
    assert spec.object_type["torch.nn.LayerNorm"] is None
    assert spec.object_type["torch.sigmoid"] == base.object_type["torch.sigmoid"]
    assert (
        to_qconfig_spec({"": None}, backend_default="x86").global_qconfig is None
    )  # explicit float
    assert to_qconfig_spec(None, backend_default=base) == base
    # The user's regexes come first, so they win over the base's.
    top = QConfigSpec().set_module_name_regex("a", qc(1))
    merged = layer(QConfigSpec().set_module_name_regex("a.*", qc(2)).set_global(qc(3)), top)
    assert resolve(merged, module_path="ab", object_type="x").qconfig == qc(1)
    assert merged.global_qconfig == qc(3)  # top has no global: the base's stays
    assert layer(base, QConfigSpec(), replace_global=True).global_qconfig is None


def test_shared_torch_qconfigs_are_read_once():
    shared = torch_qc(7)
    spec = to_qconfig_spec({"object_type": [(nn.Linear, shared), (nn.Conv2d, shared)]})
    assert spec.object_type["torch.nn.Linear"] is spec.object_type["torch.nn.Conv2d"]


def test_fake_quant_reads_its_inner_observer_for_qat():
    spec = observer_spec_from_torch(tq.default_fake_quant, where="t")
    assert spec.kind == "moving_average_minmax" and spec.option("fake_quant") is True
    assert observer_spec_from_torch(tq.default_observer, where="t").option("fake_quant") is None
    assert observer_spec_from_torch(nn.Identity, where="t") is None


# --- error messages -----------------------------------------------------------------------------


def test_unknown_top_level_key_suggests_the_closest():
    with pytest.raises(
        QConfigError, match=r"unknown key 'object_types'; did you mean 'object_type'\?"
    ):
        to_qconfig_spec({"object_types": [(nn.Linear, None)]})
    with pytest.raises(QConfigError, match="unknown key 'modulename'; did you mean 'module_name'"):
        to_qconfig_spec({"modulename": []})


def test_bad_regex_names_the_regex_and_the_re_error():
    with pytest.raises(QConfigError) as e:
        to_qconfig_spec({"module_name_regex": [("ok.*", None), ("layer[0-9", None)]})
    msg = str(e.value)
    assert "qconfig_dict['module_name_regex'][1]" in msg
    assert "'layer[0-9'" in msg and "unterminated character set" in msg


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (
            {"object_type": [(nn.Linear,)]},
            r"\['object_type'\]\[0\]: expected a tuple \(object type, qconfig\)",
        ),
        ({"object_type": [nn.Linear]}, r"\['object_type'\]\[0\]: expected a tuple"),
        ({"object_type": nn.Linear}, r"\['object_type'\] must be a list"),
        (
            {"module_name_object_type_order": [("a", F.linear, 0)]},
            "expected a tuple .* got tuple of 3 items",
        ),
        ({"module_name_object_type_order": [("a", F.linear, "0", None)]}, "int index >= 0"),
        ({"module_name": [(3, None)]}, "a module name must be a string"),
        ({"module_name": [("", None)]}, "module name '' never matches"),
        ({"module_name_regex": [(3, None)]}, "a regex must be a string"),
        ({"object_type": [(nn.Linear(2, 2), None)]}, r"\[0\]: .*pass its class instead"),
        (
            {"object_type": [(3, None)]},
            r"\[0\]: an object type must be a class, a function or a name string",
        ),
        ({"object_type": [(nn.Linear, "qconfig")]}, r"\[0\]: expected a QConfig .* got str"),
        ({"": tq.MinMaxObserver}, r"qconfig_dict\[''\]: expected a QConfig"),
        (
            {"": tq.QConfig(activation=tq.RecordingObserver, weight=None)},
            "RecordingObserver has no purequant",
        ),
    ],
)
def test_wrong_entries_are_named(bad, match):
    with pytest.raises(QConfigError, match=match):
        to_qconfig_spec(bad)


def test_unsupported_input_type_says_what_is_accepted():
    with pytest.raises(QConfigError, match="pass a QConfig, a QConfigMapping, a qconfig dict"):
        to_qconfig_spec([("", None)])


# --- equivalence with torch.ao's resolution -----------------------------------------------------


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.GELU()  # not fusable with Linear: fusion would rewrite the module types
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        y = F.linear(x, self.w)
        y = F.linear(y, self.w)
        y = self.act(self.lin(y))
        return torch.add(y, x).reshape(-1, 4).relu()


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Inner()
        self.b = Inner()
        self.fc = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc2(self.fc(self.b(self.a(x)))) + x


def _equivalence_mapping() -> QConfigMapping:
    return (
        QConfigMapping()
        .set_global(torch_qc(0))
        .set_object_type(nn.Linear, torch_qc(1))
        .set_object_type(torch.add, torch_qc(2))
        .set_object_type("reshape", torch_qc(3))
        .set_object_type(Inner, torch_qc(4))  # beats F.linear/torch.add called inside Inner
        .set_module_name_regex("b.l", torch_qc(5))
        .set_module_name_regex("b", torch_qc(6))
        .set_module_name("a.act", None)
        .set_module_name("fc2", torch_qc(7))
        .set_module_name_object_type_order("a", F.linear, 1, torch_qc(8))
        .set_module_name_object_type_order("b", torch.add, 0, torch_qc(9))
        .set_module_name_object_type_order(
            "", nn.Linear, 1, torch_qc(10)
        )  # fc2, overriding module_name
    )


def _our_decisions(gm, spec: QConfigSpec, scopes) -> dict[str, Decision]:
    """What generate_qconfig_map will do: one resolve per node, counting calls per scope."""
    modules = dict(gm.named_modules())
    counts: dict[tuple[str, str], int] = {}

    def index(path: str, key: str) -> int:
        counts[(path, key)] = counts.get((path, key), -1) + 1
        return counts[(path, key)]

    out = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.name.startswith("activation_post_process"):
            continue
        path, scope_cls = scopes.get(node.name, ("", None))
        scope_type = None if scope_cls is None else object_type_key(scope_cls)
        if node.op == "call_module":
            key = object_type_key(type(modules[node.target]))
            idx = index(node.target.rpartition(".")[0], key)
            out[node.name] = resolve_module(
                spec, module_path=node.target, module_type=key, type_order_index=idx
            )
        elif node.op == "call_function":
            key = object_type_key(node.target)
            out[node.name] = resolve_function(
                spec,
                scope_path=path,
                scope_type=scope_type,
                function=key,
                type_order_index=index(path, key),
            )
        elif node.op == "call_method":
            out[node.name] = resolve_method(
                spec, scope_path=path, scope_type=scope_type, method=node.target
            )
        elif node.op == "get_attr":
            parent = node.target.rpartition(".")[0]
            out[node.name] = resolve(
                spec, module_path=parent, object_type=object_type_key(type(modules[parent]))
            )
    return out


def test_resolution_equals_torch_ao_prepare_fx_node_by_node():
    mapping = _equivalence_mapping()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = prepare_fx(Outer().eval(), mapping, (torch.randn(2, 4),))
    attrs = gm.meta["_observed_graph_module_attrs"]
    ours = _our_decisions(gm, to_qconfig_spec(mapping), attrs.node_name_to_scope)
    theirs = attrs.node_name_to_qconfig
    assert set(ours) <= set(theirs) and len(ours) >= 15
    levels = set()
    for name, decision in ours.items():
        want = None if theirs[name] is None else qconfig_from_torch(theirs[name], where=name)
        assert decision.qconfig == want, (name, decision.reason)
        levels.add(decision.level)
    assert levels == set(LEVELS)  # the model exercises every level


@pytest.mark.parametrize("module_path", ["", "a", "a.b", "b", "b.lin", "blin", "fc2", "fc2.x"])
@pytest.mark.parametrize("object_type", [nn.Linear, F.linear, torch.add, Inner, "reshape"])
@pytest.mark.parametrize("index", [0, 1])
def test_resolution_equals_torch_ao_helpers(module_path, object_type, index):
    mapping = _equivalence_mapping()
    theirs = tq_utils._maybe_adjust_qconfig_for_module_type_or_name(
        mapping, object_type, module_path, mapping.global_qconfig
    )
    theirs = tq_utils._maybe_adjust_qconfig_for_module_name_object_type_order(
        mapping, module_path, object_type, index, theirs
    )
    ours = resolve(
        to_qconfig_spec(mapping),
        module_path=module_path,
        object_type=object_type_key(object_type),
        type_order_index=index,
    )
    assert ours.qconfig == (None if theirs is None else qconfig_from_torch(theirs, where="t"))


# --- backend defaults equal torch.ao's, field by field -------------------------------------------


def _unnamed(data):
    if isinstance(data, dict):
        return {k: _unnamed(v) for k, v in data.items() if k != "name"}
    if isinstance(data, list):
        return [_unnamed(v) for v in data]
    return data


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_spec_equals_torch_ao_default_mapping(backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onednn warns on CPUs without VNNI
        theirs = to_qconfig_spec(tq.get_default_qconfig_mapping(backend))
        global_qc = tq.get_default_qconfig(backend)
    ours = default_qconfig_spec(backend)
    # Compare the plain data first for a readable diff on failure (names are outside equality).
    assert _unnamed(ours.to_json()) == _unnamed(theirs.to_json())
    assert ours == theirs
    assert backend_default_qconfig(backend) == qconfig_from_torch(global_qc, where=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_activation_fields_read_directly_from_torch_observers(backend):
    # Independent of _torch_reader: instantiate torch.ao's observers and read attributes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_qc_ = tq.get_default_qconfig(backend)
        act, weight = torch_qc_.activation(), torch_qc_.weight()
    ours = backend_default_qconfig(backend)
    assert type(act).__name__ == "HistogramObserver" and ours.activation.kind == "histogram"
    assert ours.activation.reduce_range == act.reduce_range
    assert (ours.activation.option("bins"), ours.activation.option("upsample_rate")) == (
        act.bins,
        act.upsample_rate,
    )
    assert ours.activation.dtype == str(act.dtype).removeprefix("torch.")
    assert ours.weight.qscheme == str(weight.qscheme).removeprefix("torch.")
    assert ours.weight.eps == float(weight.eps) and ours.weight.dtype == "qint8"


def test_dynamic_fp16_and_embedding_specs_equal_quantize_dynamic_defaults():
    dyn_types = [nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.RNNCell, nn.GRUCell]
    expect = {"object_type": [(t, tq.default_dynamic_qconfig) for t in dyn_types]}
    assert default_dynamic_qconfig_spec() == to_qconfig_spec(expect)
    expect = {"object_type": [(t, tq.per_channel_dynamic_qconfig) for t in dyn_types]}
    assert default_dynamic_qconfig_spec(per_channel=True) == to_qconfig_spec(expect)
    expect = {"object_type": [(t, tq.float16_dynamic_qconfig) for t in dyn_types]}
    assert float16_qconfig_spec() == to_qconfig_spec(expect)
    emb8 = {
        "object_type": [
            (nn.EmbeddingBag, tq.float_qparams_weight_only_qconfig),
            (nn.Embedding, tq.float_qparams_weight_only_qconfig),
        ]
    }
    assert embedding_qconfig_spec(8) == to_qconfig_spec(emb8)
    emb4 = {"object_type": [(nn.EmbeddingBag, tq.float_qparams_weight_only_qconfig_4bit)]}
    assert embedding_qconfig_spec(4) == to_qconfig_spec(emb4)
    with pytest.raises(QConfigError, match="bits must be 8 or 4"):
        embedding_qconfig_spec(2)


def test_fixed_qparams_entries_equal_torch_ao_table():
    from torch.ao.quantization.qconfig_mapping import _FIXED_QPARAMS_OP_TO_OBSERVER

    theirs = {
        object_type_key(op): observer_spec_from_torch(obs, where=str(op))
        for op, obs in _FIXED_QPARAMS_OP_TO_OBSERVER.items()
    }
    assert {k: q.activation for k, q in FIXED_QPARAMS_OPS.items()} == theirs


def test_unknown_backend_is_named():
    with pytest.raises(QConfigError, match="unknown backend 'arm'"):
        default_qconfig_spec("arm")


# --- CPU-aware default --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "vnni"),
    [
        ({"avx2", "avx512f", "avx512_vnni"}, True),
        ({"avx2", "avx_vnni"}, False),  # AVX-VNNI alone: x86 routes convs to fbgemm
        ({"avx2", "avx512f", "avx512bw"}, False),
        (set(), False),
    ],
)
def test_detect_vnni_from_flag_sets(flags, vnni):
    d = detect_vnni(flags)
    assert d.vnni is vnni
    assert ("found" in d.reason) is vnni


def test_read_cpu_flags_from_a_cpuinfo_file(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Fake\nflags\t\t: fpu sse2 avx2 avx512_vnni\n\n")
    flags, source = read_cpu_flags(str(cpuinfo))
    assert "avx512_vnni" in flags and source.endswith("cpuinfo flags")
    assert detect_vnni(flags, source=source).reason == f"avx512_vnni found in {source}"


def _activation_reduce_ranges(spec: QConfigSpec) -> set[bool]:
    return {
        q.activation.reduce_range
        for _, _, q in spec.entries()
        if q is not None and q.activation is not None
    }


def test_cpu_aware_default_drops_reduce_range_only_with_vnni():
    with_vnni = cpu_aware_default("x86", flags={"avx2", "avx512_vnni"})
    assert isinstance(with_vnni, CpuAwareDefault) and with_vnni.reduce_range is False
    assert _activation_reduce_ranges(with_vnni.spec) == {False}
    assert "avx512_vnni found" in with_vnni.reason and "reduce_range is dropped" in with_vnni.reason
    # Everything but reduce_range is untouched.
    assert (
        with_vnni.spec.object_type["torch.sigmoid"]
        == default_qconfig_spec("x86").object_type["torch.sigmoid"]
    )
    assert with_vnni.spec.global_qconfig.weight == backend_default_qconfig("x86").weight

    without = cpu_aware_default("fbgemm", flags={"avx2"})
    assert without.reduce_range is True and without.spec == default_qconfig_spec("fbgemm")
    assert _activation_reduce_ranges(without.spec) == {
        True,
        False,
    }  # fixed-qparams ops never reduce
    assert "no VNNI flag" in without.reason

    qnnpack = cpu_aware_default("qnnpack", flags={"avx512_vnni"})
    assert qnnpack.spec == default_qconfig_spec("qnnpack") and "nothing to adjust" in qnnpack.reason


def test_cpu_aware_default_on_this_machine_says_what_it_saw():
    result = cpu_aware_default()
    assert result.reason and isinstance(result.reduce_range, bool)


@pytest.mark.parametrize(("flags", "reduced"), [({"avx512_vnni"}, False), ({"avx2"}, True), ({"avx2", "avx_vnni"}, True)])
def test_cpu_aware_dynamic_default_keeps_7_bits_without_avx512_vnni(flags, reduced):
    from purequant.qconfig import cpu_aware_dynamic_default, default_dynamic_qconfig_spec

    spec = cpu_aware_dynamic_default(flags=flags)
    acts = {qc.activation.reduce_range for _, _, qc in spec.entries() if qc is not None and qc.activation is not None}
    assert acts == {reduced}
    if not reduced:
        assert spec == default_dynamic_qconfig_spec()

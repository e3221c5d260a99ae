"""The plain-data codec: exact round trips through JSON, and refusal of untrusted classes."""

from __future__ import annotations

import enum
import json
import math

import pytest
from attrs import frozen
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import pmap, pset, pvector

from purequant.ir import ModuleSpec, Node, Ref, Slice, Sym, parse_graph
from purequant.observers.spec import ObserverSpec, QParams
from purequant.pipeline.codec import CodecError, dumps, from_plain, load_qualified, loads, to_plain
from purequant.pipeline.runner import StageRecord
from purequant.stages.eliminate_dead_code import DeadCodeRecord


class Color(enum.Enum):  # defined in a test module: encodes, but is not trusted on load
    RED = 1


@frozen
class Foreign:
    x: int


def _json_round_trip(value):
    return from_plain(json.loads(json.dumps(to_plain(value))))


def _same(a, b) -> bool:
    # nan != nan, so compare the plain forms, which spell nan as a tag.
    return type(a) is type(b) and json.dumps(to_plain(a)) == json.dumps(to_plain(b))


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=5),
    st.floats(allow_nan=True, allow_infinity=True), st.just(Ellipsis),
    st.builds(Ref, st.sampled_from(["x", "add_1"])), st.builds(Sym, st.just("torch.float32")),
)
hashables = st.recursive(
    leaves.filter(lambda v: not (isinstance(v, float) and math.isnan(v))),
    lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=3)),
    max_leaves=6,
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(tuple),
        st.lists(inner, max_size=4).map(pvector),
        st.dictionaries(st.text(max_size=3), inner, max_size=3).map(pmap),
        st.dictionaries(hashables, inner, max_size=3).map(pmap),
        st.frozensets(hashables, max_size=3).map(pset),
        st.builds(Slice, inner, inner, inner),
    ),
    max_leaves=20,
)


@given(values)
def test_round_trip_through_json_is_exact(value):
    back = _json_round_trip(value)
    assert _same(back, value)
    if '"nan"' not in json.dumps(to_plain(value)):  # nan != nan; _same covered those
        assert back == value


def test_types_are_kept_apart():
    value = (1, 1.0, True, "1", None, pvector([1]), (1,), pmap({1: "int", "1": "str", 1.5: "f"}))
    back = _json_round_trip(value)
    assert [type(v) for v in back] == [type(v) for v in value]
    assert back == value


def test_specials_and_records():
    assert math.isnan(_json_round_trip(math.nan))
    assert _json_round_trip((math.inf, -math.inf)) == (math.inf, -math.inf)
    record = pmap({
        "obs": ObserverSpec("histogram", dtype="qint8", options={"bins": 2048}),
        "qp": QParams("quint8", "per_tensor_affine", (0.1,), (3,), 0, 255),
        "mod": ModuleSpec("torch.nn.Conv2d", {"stride": (1, 1), "bias": None}, {"weight": "c.w"}),
        "node": Node("add", "call_function", "operator.add", (Ref("x"), 1), {"alpha": 2}, {"src": "m.py:3"}),
        "dce": DeadCodeRecord(("a", "b")),
    })
    back = loads(dumps(record))
    assert back == record
    assert back["node"].meta == record["node"].meta  # meta is outside equality: check it too


def test_graph_values_round_trip_with_meta():
    g = parse_graph("%x = placeholder x()  # src='a.py:1'\n%output = output output(%x)\n")
    back = _json_round_trip(pmap({"g": g}))["g"]
    assert back == g and back.node("x").meta == g.node("x").meta


def test_stage_record_seconds_not_in_equality_but_kept():
    rec = StageRecord(0, "s", pmap(), "a", "b", pmap({"w": None}), DeadCodeRecord(()), 1.5)
    back = _json_round_trip(rec)
    assert back == rec and back.seconds == 1.5


def test_output_is_deterministic_for_sets_and_maps():
    a = pmap({3: 1, "x": 2, (1, 2): 3})
    b = pmap({(1, 2): 3, "x": 2, 3: 1})
    assert dumps(a) == dumps(b)
    assert dumps(pset(["b", "a", "c"])) == dumps(pset(["c", "b", "a"]))


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, {1, 2}, object(), len])
def test_mutable_and_opaque_values_are_refused(value):
    with pytest.raises(CodecError, match="cannot encode"):
        to_plain(value)


def test_tensors_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(CodecError, match="torch.Tensor"):
        to_plain(pmap({"w": torch.zeros(1)}))


def test_local_classes_are_refused():
    @frozen
    class Local:
        x: int

    with pytest.raises(CodecError, match="inside a function"):
        to_plain(Local(1))


def test_classes_outside_purequant_are_not_imported():
    # Encoding works (the data is fine); loading refuses before importing anything.
    for value in (Foreign(1), Color.RED):
        with pytest.raises(CodecError, match="refusing to load"):
            _json_round_trip(value)
    evil = {"$type": "os.system", "command": "echo hacked"}
    with pytest.raises(CodecError, match="refusing to load 'os.system'"):
        from_plain(evil)


def test_trust_can_be_widened_explicitly():
    assert from_plain(to_plain(Foreign(3)), trust=(f"{__name__}.",)) == Foreign(3)
    assert from_plain(to_plain(Color.RED), trust=(f"{__name__}.",)) is Color.RED


def test_foreign_objects_reexported_by_purequant_are_refused():
    # purequant.pipeline.codec imports `json`; reaching it through a purequant name is refused.
    with pytest.raises(CodecError, match="defined in"):
        load_qualified("purequant.pipeline.codec.json.JSONDecoder")


@pytest.mark.parametrize("data, message", [
    ([1, 2], "bare JSON list"),
    ({"$nope": 1}, "unknown tag"),
    ({"$tuple": [], "x": 1}, "one-key tag"),
    ({"$float": "big"}, r"\$float holds"),
    ({"$type": "purequant.ir.node.Ref", "nid": "x"}, "has no field 'nid'"),
    ({"$type": "purequant.ir.node.no_such_thing"}, "cannot import"),
    ({"$type": "purequant.ir.node.map_value"}, "is not a class"),
])
def test_malformed_data_is_a_clear_error(data, message):
    with pytest.raises(CodecError, match=message):
        from_plain(data)

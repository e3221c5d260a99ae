"""Laws of qconfig resolution, checked with Hypothesis over random specs and queries.

Specs are drawn from small alphabets (paths over a, b, c; a handful of types and regexes) so that
random queries hit entries often; qconfigs are distinct by content.
"""

from __future__ import annotations

import json

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.quantization import QConfigMapping
from torch.ao.quantization.fx import qconfig_mapping_utils as tq_utils

from purequant.observers.spec import ObserverSpec
from purequant.qconfig import QConfig, QConfigSpec, resolve, to_qconfig_spec
from purequant.qconfig.names import object_type_key

SETTINGS = settings(max_examples=60, deadline=None)

QCONFIGS = [QConfig(ObserverSpec("minmax", quant_min=0, quant_max=100 + k)) for k in range(4)]
# Object types as torch.ao users pass them; keys are their canonical strings.
TYPES = [nn.Linear, nn.Conv2d, F.linear, torch.add, "reshape"]
REGEXES = ["a", r"a\.b", ".*c", "b.*", "a.*b$", ""]

paths = st.lists(st.sampled_from("abc"), max_size=3).map(".".join)
names = st.lists(st.sampled_from("abc"), min_size=1, max_size=3).map(".".join)
qconfigs = st.sampled_from([None, *QCONFIGS])
types = st.sampled_from(TYPES)
indices = st.integers(0, 2)


@st.composite
def entries(draw):
    """A 1.7-style qconfig dict (object types as objects, like users write them)."""
    return {
        "": draw(qconfigs),
        "object_type": draw(
            st.lists(st.tuples(types, qconfigs), max_size=3, unique_by=lambda e: str(e[0]))
        ),
        "module_name_regex": draw(
            st.lists(
                st.tuples(st.sampled_from(REGEXES), qconfigs), max_size=3, unique_by=lambda e: e[0]
            )
        ),
        "module_name": draw(
            st.lists(st.tuples(names, qconfigs), max_size=3, unique_by=lambda e: e[0])
        ),
        "module_name_object_type_order": draw(
            st.lists(
                st.tuples(paths, types, indices, qconfigs),
                max_size=3,
                unique_by=lambda e: (e[0], str(e[1]), e[2]),
            )
        ),
    }


@st.composite
def queries(draw):
    return {
        "module_path": draw(paths),
        "object_type": object_type_key(draw(types)),
        "type_order_index": draw(st.none() | indices),
    }


def _permuted(d: dict, perm: list[int]) -> dict:
    """The same dict with the entries of every unordered level in another order."""

    out = dict(d)
    for level in ("object_type", "module_name", "module_name_object_type_order"):
        items = list(d[level])
        order = sorted(range(len(items)), key=lambda i: perm[i % len(perm)] if perm else i)
        out[level] = [items[i] for i in order]
    return dict(reversed(list(out.items())))  # top-level key order too


@SETTINGS
@given(entries(), queries(), st.permutations(range(3)))
def test_resolution_is_deterministic_and_ignores_entry_order(d, query, perm):
    spec = to_qconfig_spec(d)
    first = resolve(spec, **query)
    assert resolve(spec, **query) == first  # deterministic
    assert resolve(to_qconfig_spec(d), **query) == first  # fresh conversion, same answer
    other = to_qconfig_spec(_permuted(d, list(perm)))
    assert other == spec
    assert resolve(other, **query) == first


@SETTINGS
@given(entries(), queries(), st.sampled_from(QCONFIGS))
def test_adding_a_global_never_overrides_a_more_specific_level(d, query, new_global):
    spec = to_qconfig_spec(d)
    before = resolve(spec, **query)
    after = resolve(spec.set_global(new_global), **query)
    if before.level in ("global", "none"):
        assert (after.level, after.qconfig) == ("global", new_global)
    else:
        assert (after.level, after.entry, after.qconfig) == (
            before.level,
            before.entry,
            before.qconfig,
        )


@SETTINGS
@given(entries(), queries(), st.lists(st.tuples(st.sampled_from(REGEXES), qconfigs), max_size=3))
def test_regexes_registered_later_never_beat_an_earlier_match(d, query, extra):
    spec = to_qconfig_spec(d)
    before = resolve(spec, **query)
    grown = spec
    for regex, qc in extra:
        if regex not in dict(spec.module_name_regex):
            grown = grown.set_module_name_regex(regex, qc)
    after = resolve(grown, **query)
    if before.level not in ("global", "none", "object_type"):
        assert (after.level, after.entry, after.qconfig) == (
            before.level,
            before.entry,
            before.qconfig,
        )


@SETTINGS
@given(entries(), queries())
def test_resolution_equals_torch_ao_helpers(d, query):
    # torch.ao's QConfigMapping does not validate its values, so it can hold our QConfigs and
    # its helpers then answer in our terms.
    mapping = QConfigMapping.from_dict(d)
    obj = {object_type_key(t): t for t in TYPES}[query["object_type"]]
    theirs = tq_utils._maybe_adjust_qconfig_for_module_type_or_name(
        mapping, obj, query["module_path"], mapping.global_qconfig
    )
    if query["type_order_index"] is not None:
        theirs = tq_utils._maybe_adjust_qconfig_for_module_name_object_type_order(
            mapping, query["module_path"], obj, query["type_order_index"], theirs
        )
    assert resolve(to_qconfig_spec(mapping), **query).qconfig == theirs


@SETTINGS
@given(entries())
def test_spec_json_round_trip(d):
    spec = to_qconfig_spec(d)
    data = json.loads(json.dumps(spec.to_json()))
    assert QConfigSpec.from_json(data) == spec
    assert QConfigSpec.from_json(data).to_json() == data

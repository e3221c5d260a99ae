"""check_config reports the entries a backend ignores, and why, before anything runs."""

from __future__ import annotations

import torch

import purequant
from purequant.models import ZOO
from purequant.observers import ObserverSpec
from purequant.qconfig import QConfig, backend_default_qconfig

torch.set_num_threads(1)
QINT8_ACT = QConfig(
    activation=ObserverSpec("minmax", dtype="qint8", qscheme="per_tensor_symmetric"),
    weight=ObserverSpec("minmax", dtype="qint8", qscheme="per_tensor_symmetric"),
)


def _report():
    entry = ZOO["digits"]
    model = entry.build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = {
        "": backend_default_qconfig("x86"),
        "object_type": [(torch.nn.Linear, QINT8_ACT), (torch.nn.LSTM, QINT8_ACT)],
        "module_name_regex": [("nothing.*", QINT8_ACT)],
        "module_name": [("features.0", None)],
    }
    report = purequant.check_config(model, config, entry.example_inputs())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return {(e.level, e.key): e for e in report.entries}, report


def test_unsupported_dtypes_are_reported_per_node_with_the_reason():
    entries, _ = _report()
    linear = entries[("object_type", "torch.nn.Linear")]
    assert linear.decided and not linear.quantized
    assert all("qint8" in why and "not supported" in why for _, why in linear.ignored)
    assert {nid for nid, _ in linear.ignored} == set(linear.decided)


def test_entries_that_match_nothing_are_reported():
    entries, _ = _report()
    for key in [("object_type", "torch.nn.LSTM"), ("module_name_regex", "nothing.*")]:
        e = entries[key]
        assert e.decided == () and e.ignored and "decides no node" in e.ignored[0][1]


def test_a_none_entry_is_not_reported_as_ignored_and_global_quantizes():
    entries, report = _report()
    skip = entries[("module_name", "features.0")]
    assert skip.decided and skip.ignored == ()
    glob = entries[("global", "")]
    assert glob.quantized and glob.ignored == ()
    assert "ignored at %classifier_2" in str(report)

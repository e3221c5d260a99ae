"""Tests for purequant.qconfig: names, specs, conversion, resolution, defaults, CPU detection."""

from __future__ import annotations

import math
import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

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

"""How each tool quantizes each benchmark model: one recipe, shared by every section.

Static models (ResNet-18, MobileNetV2, the BERT-style encoder, the digits CNN, conv chains) get
torch.ao's `get_default_qconfig_mapping("x86")`, given as the same object to both tools, and the
same calibration batches. Dynamic models (LSTM, MLP) get a QConfigMapping with
`default_dynamic_qconfig` on nn.Linear and nn.LSTM (global for the MLP, whose Linear + ReLU
torch.ao fuses and then refuses a Linear-only entry for), given to both tools (`quantize_dynamic` for
ours, `prepare_fx`/`convert_fx` for torch.ao), plus torch.ao's eager `quantize_dynamic`.

When our convert fails on a model, `quantized_pair` records the error and, if a fallback is
known for that model, quantizes both tools with the fallback mapping instead (named in the row).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import purequant
from purequant.models import ZOO, residual_chain_for_nodes

warnings.filterwarnings("ignore")

DYNAMIC = frozenset({"lstm", "mlp"})
CAL_BATCHES, CAL_BATCH = 8, 4  # calibration: 8 batches of 4 samples (zoo calibration seeds)


def static_mapping():
    from torch.ao.quantization import get_default_qconfig_mapping

    return get_default_qconfig_mapping("x86")


def dynamic_mapping(name: str):
    from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig

    qc = default_dynamic_qconfig
    if name == "mlp":  # torch.ao refuses a Linear-only entry where it fuses Linear + ReLU
        return QConfigMapping().set_global(qc)
    return QConfigMapping().set_object_type(nn.Linear, qc).set_object_type(nn.LSTM, qc)


# model -> (what the fallback does, mapping -> mapping); used only when our convert fails.
FALLBACKS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "bert": ("nn.LayerNorm left float in both tools",
             lambda m: m.set_object_type(nn.LayerNorm, None)),
}


@dataclass
class Case:
    """A model with its inputs and the mapping both tools get."""

    name: str
    model: nn.Module
    example: tuple
    calibration: list[tuple]
    mapping: Any
    dynamic: bool
    label: str = ""
    fallback: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> int:
        return len(torch.fx.symbolic_trace(self.model).graph.nodes)


def chain_name(n_nodes: int) -> str:
    return f"conv chain {n_nodes // 1000}k" if n_nodes >= 1000 else f"conv chain {n_nodes}"


def case(name: str, *, batches: int = CAL_BATCHES, batch: int = CAL_BATCH) -> Case:
    """The Case of a zoo name, or of 'chain:<nodes>' (a conv residual chain, 1 batch of 1)."""
    if name.startswith("chain:"):
        n = int(name.split(":", 1)[1])
        model = residual_chain_for_nodes(n, "conv")
        x = (torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0)),)
        return Case(name, model, x, [x], static_mapping(), False, chain_name(n))
    entry = ZOO[name]
    dynamic = name in DYNAMIC
    return Case(
        name, entry.build(), entry.example_inputs(1), list(entry.calibration_batches(batches, batch)),
        dynamic_mapping(name) if dynamic else static_mapping(), dynamic, name,
    )


# ------------------------------------------------------------------------------- purequant
def ours_prepare(c: Case, qconfig: Any = "same") -> purequant.Prepared:
    return purequant.prepare(c.model, c.mapping if qconfig == "same" else qconfig, c.example)


def ours_calibrated(c: Case, qconfig: Any = "same") -> purequant.Prepared:
    p = ours_prepare(c, qconfig)
    return p if c.dynamic else purequant.calibrate(p, c.calibration)


def ours_quantized(c: Case, qconfig: Any = "same") -> torch.fx.GraphModule:
    """Ours, quantized with the same mapping as torch.ao (or `qconfig`; None = CPU-aware default)."""
    if c.dynamic:
        q = c.mapping if qconfig == "same" else qconfig
        return purequant.quantize_dynamic(c.model, c.example, q)
    return purequant.convert(ours_calibrated(c, qconfig))


# -------------------------------------------------------------------------------- torch.ao
def ao_prepare(c: Case) -> torch.fx.GraphModule:
    from torch.ao.quantization.quantize_fx import prepare_fx

    return prepare_fx(c.model, c.mapping, c.example)


def ao_calibrated(c: Case) -> torch.fx.GraphModule:
    p = ao_prepare(c)
    if not c.dynamic:
        with torch.no_grad():
            for b in c.calibration:
                p(*b)
    return p


def ao_convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    from torch.ao.quantization.quantize_fx import convert_fx

    return convert_fx(prepared)  # consumes `prepared`: callers pass a copy


def ao_quantized(c: Case) -> torch.fx.GraphModule:
    return ao_convert(ao_calibrated(c))


def ao_eager_dynamic(c: Case) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(copy.deepcopy(c.model), {nn.Linear, nn.LSTM}, dtype=torch.qint8)


# ---------------------------------------------------------------------------------- pairs
def first_line(ex: BaseException) -> str:
    text = str(ex).strip().splitlines()
    return f"{type(ex).__name__}: {text[0] if text else ''}"


def usable_case(name: str, **kw: Any) -> Case:
    """The Case of `name`, switched to its fallback mapping if our convert fails on it.

    The failure is kept in `case.notes`; a model with no fallback keeps its failing mapping
    (the caller's own try/except then reports the error in its row).
    """
    c = case(name, **kw)
    try:  # one calibration batch is enough to find out
        if c.dynamic:
            ours_quantized(c)
        else:
            purequant.convert(purequant.calibrate(ours_prepare(c), c.calibration[:1]))
        return c
    except Exception as ex:
        c.notes.append(f"{c.label}: purequant with the default mapping fails ({first_line(ex)})")
        if name not in FALLBACKS:
            return c
    return with_fallback(c)


def with_fallback(c: Case) -> Case:
    """`c` with its model's fallback mapping (both tools get it), named in its label."""
    what, change = FALLBACKS[c.name]
    c.mapping, c.fallback = change(c.mapping), True
    c.label = f"{c.label} [{what}]"
    return c

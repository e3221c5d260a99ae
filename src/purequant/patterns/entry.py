"""Pattern entries: a pattern plus everything later stages need to quantize what it matches.

Every field is plain frozen data (strings, numbers, tuples, persistent maps), so entries print,
compare, hash and serialise, and a table is a value. Priority is an explicit integer written
next to the entry, never an accident of registration order.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Any

from attrs import field, frozen
from pyrsistent import PMap, pmap

from ..ir.node import as_pmap
from ..observers.spec import ObserverSpec
from .pattern import Pat


class Observation(str, Enum):
    """How the output of a matched pattern is observed (torch.ao's ObservationType)."""

    OWN_OUTPUT = "own_output"  # its own observer (conv, linear, add of two tensors)
    SHARES_INPUT = "shares_input"  # the observer of its first input (maxpool, reshape, cat)
    FIXED = "fixed"  # qparams known in advance (sigmoid, tanh)
    NONE = "none"  # not observed (size, shape; weight-only embedding)

    def __str__(self) -> str:
        return self.value



@frozen
class Constraint:
    """Backend limits on a quantized dtype (torch.ao's DTypeWithConstraints, less the dtype).

    Attributes:
        quant_min: lowest integer the observer may use (the observer's range must lie within).
        quant_max: highest integer the observer may use.
        scale_min: smallest scale; an observer's `eps` must be at least this.
    """

    quant_min: int | None = None
    quant_max: int | None = None
    scale_min: float | None = None

    def violation(self, spec: ObserverSpec) -> str | None:
        """Why `spec` breaks this constraint, or None when it satisfies it."""
        if self.quant_min is not None and self.quant_max is not None:
            lo, hi = quant_range(spec)
            if lo < self.quant_min or hi > self.quant_max:
                return f"range [{lo}, {hi}] not within [{self.quant_min}, {self.quant_max}]"
        if self.scale_min is not None and spec.eps < self.scale_min:
            return f"eps {spec.eps:g} below the minimum scale {self.scale_min:g}"
        return None


_RANGES = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-(2**31), 2**31 - 1), "quint4x2": (0, 15)}


def quant_range(spec: ObserverSpec) -> tuple[int, int]:
    """The integer range an observer uses: explicit, else the dtype's, halved by reduce_range."""
    if spec.quant_min is not None and spec.quant_max is not None:
        return spec.quant_min, spec.quant_max
    lo, hi = _RANGES.get(spec.dtype, (0, 0))
    if spec.reduce_range:
        lo, hi = lo // 2, hi // 2
    return lo, hi


@frozen
class DTypeConfig:
    """One combination of dtypes a backend kernel accepts (torch.ao's DTypeConfig).

    Attributes:
        activation: input activation dtype ("float32": activations stay float, weight-only).
            Static configs output the same dtype; dynamic ones output float32.
        weight: weight dtype; None when the config does not constrain weights.
        bias: bias dtype; None when unconstrained (informational: bias stays float on CPU).
        is_dynamic: activations are quantized at run time.
        activation_constraint: limits on the activation observer.
        weight_constraint: limits on the weight observer.
    """

    activation: str
    weight: str | None = None
    bias: str | None = None
    is_dynamic: bool = False
    activation_constraint: Constraint | None = None
    weight_constraint: Constraint | None = None

    def rejection(self, qconfig: Any, has_weight: bool) -> str | None:
        """Why this config does not accept `qconfig`: "dtypes" when the dtypes differ, a
        constraint violation otherwise; None when it accepts it."""
        act, w = qconfig.activation, qconfig.weight
        act_dtype = act.dtype if act is not None else "float32"
        dynamic = bool(act is not None and act.is_dynamic)
        if dynamic != self.is_dynamic or act_dtype != self.activation:
            return "dtypes"
        if has_weight and self.weight is not None:
            if (w.dtype if w is not None else "float32") != self.weight:
                return "dtypes"
            why = self.weight_constraint.violation(w) if w is not None and self.weight_constraint else None
            if why:
                return f"weight {why} (for {self})"
        why = self.activation_constraint.violation(act) if act is not None and self.activation_constraint else None
        return f"activation {why} (for {self})" if why else None

    def __str__(self) -> str:
        text = self.activation + (" dynamic" if self.is_dynamic else "")
        if self.weight is not None:
            text += f"/{self.weight} weight"
        if self.activation_constraint or self.weight_constraint:
            text += " (constrained)"
        return text


@frozen
class PatternEntry:
    """A pattern and how to quantize what it matches.

    Attributes:
        name: unique within a table, e.g. `conv2d_bn_relu`.
        pattern: the reverse-nested pattern, rooted at the op that produces the output.
        priority: higher wins when several entries match at one node.
        observation: how the output is observed.
        dtype_configs: accepted dtype combinations; a match is kept only if one accepts the
            node's qconfig.
        handler: the lowering rule's key (`conv`, `linear`, `binary_op`, ...).
        input_args: positions of the anchor's positional args that carry activations to
            quantize; None: every tensor argument that is not a weight or bias.
        weight_arg: (position, keyword) of the anchor's weight argument (functional ops).
        bias_arg: (position, keyword) of the anchor's bias argument.
        quantize_weight: the weight argument is quantized with qconfig.weight (False for norms,
            whose weight stays float but is still not an activation).
        module_weight: the anchor is a call_module whose parameters are quantized weights.
        fixed_qparams: dtype -> (scale, zero_point) for FIXED entries.
        shares_all_inputs: for SHARES_INPUT entries whose first argument is a list (cat,
            stack): every element shares the first element's observer, as torch.ao does.
        observe_inputs: False for ops that only pass a value through when it is already
            observed (getitem): their inputs are never given an observer of their own.
        by_tensor_args: observation by number of tensor arguments, overriding `observation`
            (add: 2 tensors own observer, 1 tensor shares its input's, 0 not observed).
        fused_module: qualified class of the fused module the fuse stage makes, if any.
        qat_module: qualified class of the QAT module, if any.
        source: where the entry was defined, `file:line` (for explain); outside equality.
        note: one line on a difference from torch.ao or anything else worth knowing.
    """

    name: str
    pattern: Pat
    priority: int
    observation: Observation
    dtype_configs: tuple[DTypeConfig, ...]
    handler: str
    input_args: tuple[int, ...] | None = None
    weight_arg: tuple[int, str] | None = None
    bias_arg: tuple[int, str] | None = None
    quantize_weight: bool = True
    module_weight: bool = False
    fixed_qparams: PMap = field(factory=pmap, converter=as_pmap)
    shares_all_inputs: bool = False
    observe_inputs: bool = True
    by_tensor_args: PMap = field(factory=pmap, converter=as_pmap)
    fused_module: str | None = None
    qat_module: str | None = None
    source: str = field(default="", eq=False)
    note: str = ""

    def __attrs_post_init__(self) -> None:
        if self.pattern.op is None:
            raise ValueError(f"pattern entry {self.name!r}: the root of a pattern cannot be ANY")
        if self.observation is Observation.FIXED and not self.fixed_qparams:
            raise ValueError(f"pattern entry {self.name!r}: FIXED needs fixed_qparams")

    @property
    def has_weight(self) -> bool:
        """True when matches quantize a weight (module parameters or a weight argument)."""
        return self.module_weight or (self.weight_arg is not None and self.quantize_weight)

    def rejection(self, qconfig: Any) -> str | None:
        """Why no dtype config accepts `qconfig` (None: one does). `qconfig` is not None."""
        reasons = [dc.rejection(qconfig, self.has_weight) for dc in self.dtype_configs]
        if all(reasons):
            specific = [r for r in dict.fromkeys(reasons) if r and r != "dtypes"]
            if specific:
                return "; ".join(specific)
            accepts = ", ".join(str(dc) for dc in self.dtype_configs)
            return f"dtypes {_describe_dtypes(qconfig, self.has_weight)} not supported (accepts {accepts})"
        return self._fixed_mismatch(qconfig.activation)

    def accepted_config(self, qconfig: Any) -> DTypeConfig | None:
        for dc in self.dtype_configs:
            if dc.rejection(qconfig, self.has_weight) is None:
                return dc
        return None

    def fixed_spec(self, act: ObserverSpec) -> ObserverSpec | None:
        """The `fixed` spec this entry gives an output quantized like `act`, if FIXED."""
        if self.observation is not Observation.FIXED:
            return None
        if act.kind == "fixed":
            return act
        scale, zero_point = self.fixed_qparams[act.dtype]
        lo, hi = _RANGES[act.dtype]
        return ObserverSpec(
            "fixed", dtype=act.dtype, quant_min=lo, quant_max=hi,
            options={"scale": scale, "zero_point": zero_point},
        )

    def _fixed_mismatch(self, act: ObserverSpec | None) -> str | None:
        # A fixed observer in the qconfig must agree with the entry (torch.ao's exact-match
        # constraint); any other observer kind is replaced by the entry's fixed spec (1.7).
        if self.observation is not Observation.FIXED or act is None or act.is_dynamic:
            return None
        want = self.fixed_qparams.get(act.dtype)
        if want is None:
            return f"no fixed qparams for {act.dtype}"
        if act.kind == "fixed":
            got = (act.option("scale"), act.option("zero_point"))
            if tuple(got) != tuple(want):
                return f"fixed qparams {got} differ from the op's {tuple(want)}"
        return None


def _describe_dtypes(qconfig: Any, has_weight: bool) -> str:
    act, w = qconfig.activation, qconfig.weight
    text = (act.dtype if act is not None else "float32") + (" dynamic" if act is not None and act.is_dynamic else "")
    if has_weight:
        text += f"/{w.dtype if w is not None else 'float32'} weight"
    return text


def caller_source(depth: int = 1) -> str:
    """`file:line` of the caller's caller (depth 1), for PatternEntry.source."""
    frame = sys._getframe(depth + 1)
    path = frame.f_code.co_filename.replace("\\", "/")
    cut = path.rfind("/purequant/")
    # Inside purequant, a path from the package root reads the same on every machine.
    return f"{path[cut + 1:] if cut >= 0 else path}:{frame.f_lineno}"


def entry(name: str, pattern: Pat, priority: int, observation: Observation, dtype_configs, handler: str, **fields: Any) -> PatternEntry:
    """Make a PatternEntry that remembers where this call was written (tinygrad-style)."""
    fields.setdefault("source", caller_source())
    return PatternEntry(
        name, pattern, priority, Observation(observation), tuple(dtype_configs), handler, **fields
    )

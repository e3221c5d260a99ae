"""What `lower` did, as frozen plain data (ids, names, strings): JSON-serialisable."""

from __future__ import annotations

from collections import Counter

from attrs import frozen


@frozen
class LoweredMatch:
    """One match lowered to quantized ops.

    Attributes:
        root: id of the match's root in the observed graph (the new node producing its output
            keeps this id).
        entry: the pattern entry's name.
        handler: the rule that lowered it.
        ops: targets of the quantized kernels and prepack ops it emitted, in order
            (`torch.ops.quantized.conv2d_prepack`, `torch.ops.quantized.conv2d_relu`); for the
            reference target, the float ops it wrapped in quantize/dequantize.
    """

    root: str
    entry: str
    handler: str
    ops: tuple[str, ...] = ()


@frozen
class LoweringSkip:
    """A match left in float, and why (never warned: read it here)."""

    root: str
    entry: str
    handler: str
    reason: str


@frozen
class LoweringNote:
    """A match lowered to a kernel with a caveat worth knowing (never warned: read it here)."""

    root: str
    note: str


@frozen
class LoweringRecord:
    """What `lower` did.

    Attributes:
        target: "native" or "reference".
        backend: the backend whose kernels (and limits) were used.
        lowered: matches lowered, in graph order of their roots.
        skipped: matches left float, with reasons, in graph order.
        quantized: observer ids that became a quantize node (the node keeps the observer's id).
        requantized: observer ids whose value was already quantized with other qparams.
        dequantized: value ids dequantized for float readers (once each).
        new_params: params paths this stage added (per-channel scales and zero points).
        dropped_modules: module paths removed from `modules` (no node calls them any more).
        notes: lowered matches with a caveat (a kernel that may saturate with these qparams).
    """

    target: str
    backend: str
    lowered: tuple[LoweredMatch, ...] = ()
    skipped: tuple[LoweringSkip, ...] = ()
    quantized: tuple[str, ...] = ()
    requantized: tuple[str, ...] = ()
    dequantized: tuple[str, ...] = ()
    new_params: tuple[str, ...] = ()
    dropped_modules: tuple[str, ...] = ()
    notes: tuple[LoweringNote, ...] = ()

    def handler_counts(self) -> dict[str, int]:
        """Lowered matches per handler."""
        return dict(Counter(m.handler for m in self.lowered))

    def op_counts(self) -> dict[str, int]:
        """Emitted ops per target, over every lowered match."""
        return dict(Counter(op for m in self.lowered for op in m.ops))

    def skip_reasons(self) -> dict[str, str]:
        """root id -> why its match stayed float."""
        return {s.root: s.reason for s in self.skipped}

"""One exception hierarchy for purequant.

Every error carries the stage it was raised in and the node it concerns (when there is one).
The pipeline runner adds notes once, on the way out: the stages already run, the node printed as
a line, where it came from in the user's code, and the graph around it.
"""

from __future__ import annotations


class PurequantError(Exception):
    """Base class of every error purequant raises on purpose.

    Attributes:
        stage: name of the stage that raised it, when known.
        node_id: id of the node it concerns, when there is one.
        hint: one line saying what the user can do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        stage: str | None = None,
        node_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.node_id = node_id
        self.hint = hint

    def __str__(self) -> str:
        parts = []
        if self.stage:
            parts.append(f"[{self.stage}]")
        if self.node_id:
            parts.append(f"node %{self.node_id}:")
        parts.append(self.message)
        text = " ".join(parts)
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class GraphError(PurequantError):
    """A graph is malformed or an edit would make it so."""


class TraceError(PurequantError):
    """A model could not be captured by torch.fx."""


class ConfigError(PurequantError):
    """A configuration (qconfig, backend, custom config) is invalid."""


class StageError(PurequantError):
    """A stage failed on a well-formed graph (bad input data, unsupported case)."""

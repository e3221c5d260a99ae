"""Deep synthetic residual chains, for scaling tests and benchmarks.

Block i computes `x = x + relu(layers[i](x))`, where the layer is a 3x3 "same" conv or a square
Linear. The layers sit flat in one `nn.ModuleList` (names `layers.0` ... `layers.N-1`): never
nested block in block, since recursive nesting makes `named_modules()` recurse once per block
and breaks Python's recursion limit long before 30k nodes.

Traced with torch.fx, a chain of N blocks has exactly `FIXED_NODES + NODES_PER_BLOCK * N`
nodes: one placeholder, per block one call_module (the layer), one call_function
(`torch.nn.functional.relu`) and one call_function (`operator.add`), and one output.
`residual_chain_for_nodes` inverts that count.

Each layer's weight and bias are scaled by 1/N after init, so the residual stream grows by a
bounded factor whatever the depth. Unscaled, every block roughly doubles the activations'
second moment and 10k blocks overflow float32. 1/sqrt(N), the usual residual scaling, is not
enough here: relu's output has a positive mean, which the next layers amplify block after
block, and the stream still grows like exp(c * sqrt(N)) (measured: 1e23 at 10k conv blocks).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .init import build_seeded

Kind = Literal["conv", "linear"]

NODES_PER_BLOCK = 3
FIXED_NODES = 2
WIDTH = 16
SPATIAL = 8  # height and width of the conv kind's feature maps


class ResidualChain(nn.Module):
    """`num_blocks` blocks of `x = x + relu(layer(x))`, layers held flat in a ModuleList.

    Args:
        num_blocks: number of blocks (>= 1).
        kind: "conv" (3x3 conv, padding 1, on (batch, width, H, W)) or "linear"
            (on (batch, width)).
        width: channels (conv) or features (linear), unchanged through the chain.
    """

    def __init__(self, num_blocks: int, kind: Kind = "conv", width: int = WIDTH) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.layers = nn.ModuleList(_layer(kind, width) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A Python loop over a fixed ModuleList: torch.fx unrolls it into a flat chain.
        for layer in self.layers:
            x = x + F.relu(layer(x))
        return x


def _layer(kind: str, width: int) -> nn.Module:
    if kind == "conv":
        return nn.Conv2d(width, width, 3, padding=1)
    if kind == "linear":
        return nn.Linear(width, width)
    raise ValueError(f"kind must be 'conv' or 'linear', got {kind!r}")


def residual_chain(
    num_blocks: int, kind: Kind = "conv", width: int = WIDTH, *, seed: int = 0,
) -> ResidualChain:
    """Build a residual chain with deterministic, depth-scaled weights, in eval mode.

    Args:
        num_blocks: number of blocks; the traced graph has `node_count(num_blocks)` nodes.
        kind: "conv" or "linear".
        width: channels (conv) or features (linear).
        seed: seed of the local generator the weights come from.

    Returns:
        The chain; input and output (batch, width, H, W) for conv, (batch, width) for linear.
    """
    model = build_seeded(lambda: ResidualChain(num_blocks, kind, width), seed)
    scale = 1.0 / num_blocks
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(scale)
    return model


def node_count(num_blocks: int) -> int:
    """Number of torch.fx nodes in the traced graph of a chain with `num_blocks` blocks."""
    return FIXED_NODES + NODES_PER_BLOCK * num_blocks


def blocks_for_nodes(n_nodes: int) -> int:
    """Fewest blocks (at least 1) whose traced graph has >= `n_nodes` nodes."""
    return max(1, math.ceil((n_nodes - FIXED_NODES) / NODES_PER_BLOCK))


def residual_chain_for_nodes(
    n_nodes: int, kind: Kind = "conv", width: int = WIDTH, *, seed: int = 0,
) -> ResidualChain:
    """Build the shortest residual chain whose traced graph has at least `n_nodes` nodes.

    The graph has `node_count(blocks_for_nodes(n_nodes))` nodes: `n_nodes` rounded up to the
    next `FIXED_NODES + 3 * k`, so at most 2 more than asked.

    Args:
        n_nodes: the torch.fx node count wanted.
        kind: "conv" or "linear".
        width: channels (conv) or features (linear).
        seed: seed of the local generator the weights come from.

    Returns:
        The chain, in eval mode.
    """
    return residual_chain(blocks_for_nodes(n_nodes), kind, width, seed=seed)


def chain_batch(
    batch: int, generator: torch.Generator, kind: Kind = "conv", width: int = WIDTH,
) -> tuple:
    """Standard-normal inputs for a chain: (batch, width, SPATIAL, SPATIAL) or (batch, width)."""
    shape = (batch, width, SPATIAL, SPATIAL) if kind == "conv" else (batch, width)
    return (torch.randn(*shape, generator=generator),)

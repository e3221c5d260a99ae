"""A text classifier: token Embedding -> nn.LSTM -> Linear on the last time step.

The target of dynamic quantization. `nn.LSTM` lives in `torch.nn`, so torch.fx keeps it as a
single call_module leaf without being told; its tuple output is indexed, never unpacked,
because unpacking a traced value needs the bytecode tricks torch.fx only half supports.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import build_seeded

VOCAB_SIZE = 8000
SEQ_LEN = 32


class LSTMText(nn.Module):
    """Embedding, a (batch-first) LSTM, and a Linear classifier on the last output.

    Args:
        vocab_size: number of token ids.
        embed_dim: embedding width.
        hidden: LSTM hidden size.
        num_layers: stacked LSTM layers.
        num_classes: size of the output.
    """

    def __init__(
        self, vocab_size: int, embed_dim: int, hidden: int, num_layers: int, num_classes: int,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=num_layers, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        outputs = self.lstm(self.embedding(token_ids))[0]
        return self.classifier(outputs[:, -1])


def lstm_text(
    vocab_size: int = VOCAB_SIZE, embed_dim: int = 64, hidden: int = 128, num_layers: int = 1,
    num_classes: int = 2, *, seed: int = 0,
) -> LSTMText:
    """Build the LSTM text classifier with deterministic weights, in eval mode.

    Args:
        vocab_size: number of token ids.
        embed_dim: embedding width.
        hidden: LSTM hidden size.
        num_layers: stacked LSTM layers.
        num_classes: size of the output.
        seed: seed of the local generator the weights come from.

    Returns:
        The model; input int64 token ids (batch, any length), output (batch, num_classes).
    """
    return build_seeded(
        lambda: LSTMText(vocab_size, embed_dim, hidden, num_layers, num_classes), seed
    )


def token_batch(
    batch: int, generator: torch.Generator, vocab_size: int = VOCAB_SIZE, seq_len: int = SEQ_LEN,
) -> tuple:
    """Uniform random int64 token ids shaped (batch, seq_len)."""
    return (torch.randint(0, vocab_size, (batch, seq_len), generator=generator),)

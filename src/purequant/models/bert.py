"""A small BERT-style encoder with a classification head, written so torch.fx traces it.

Everything that decides a shape is fixed at construction (sequence length, heads, head size),
so the traced graph has no shape-reading nodes (`size`, `getattr shape`) and no data-dependent
control flow: reshapes take constants. The price is that inputs must be exactly
(batch, seq_len) token ids, as with a padded fixed-length classification benchmark.

Attention is written out (Linear, reshape, transpose, matmul, softmax) instead of using
`nn.MultiheadAttention`, whose fused kernel would be one opaque node to a quantizer.
Post-LayerNorm residual layers and a tanh pooler over the first token, as in BERT. No dropout:
it is the identity in eval mode and would only add nodes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .init import build_seeded

VOCAB_SIZE = 8000
SEQ_LEN = 64


class Embeddings(nn.Module):
    """Token embedding + learned position embedding, then LayerNorm.

    Args:
        vocab_size: number of token ids.
        hidden: embedding width.
        seq_len: the (fixed) sequence length.
    """

    def __init__(self, vocab_size: int, hidden: int, seq_len: int) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab_size, hidden)
        self.position = nn.Embedding(seq_len, hidden)
        self.norm = nn.LayerNorm(hidden)
        # A buffer, not torch.arange in forward: it traces to a get_attr constant.
        self.register_buffer("position_ids", torch.arange(seq_len).unsqueeze(0), persistent=False)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.word(token_ids) + self.position(self.position_ids))


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention with an output projection.

    Args:
        hidden: model width (num_heads * head size).
        num_heads: number of heads.
        seq_len: the (fixed) sequence length, used in the constant reshapes.
    """

    def __init__(self, hidden: int, num_heads: int, seq_len: int) -> None:
        super().__init__()
        if hidden % num_heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.seq_len = seq_len
        self.hidden = hidden
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, hidden)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # (B, S, hidden) -> (B, heads, S, head_dim); -1 takes the batch so no size() is traced.
        return x.reshape(-1, self.seq_len, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.query(x))
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        probs = F.softmax(scores, dim=-1)
        context = torch.matmul(probs, v).transpose(1, 2).reshape(-1, self.seq_len, self.hidden)
        return self.output(context)


class EncoderLayer(nn.Module):
    """Attention and a GELU feed-forward block, each as LayerNorm(x + sublayer(x)).

    Args:
        hidden: model width.
        num_heads: attention heads.
        intermediate: feed-forward width.
        seq_len: the (fixed) sequence length.
    """

    def __init__(self, hidden: int, num_heads: int, intermediate: int, seq_len: int) -> None:
        super().__init__()
        self.attention = SelfAttention(hidden, num_heads, seq_len)
        self.attention_norm = nn.LayerNorm(hidden)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.gelu = nn.GELU()
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ffn_norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention(x))
        return self.ffn_norm(x + self.ffn_out(self.gelu(self.ffn_in(x))))


class BertClassifier(nn.Module):
    """Embeddings, a stack of encoder layers, a tanh pooler on token 0, a Linear classifier.

    Args:
        vocab_size: number of token ids.
        hidden: model width.
        num_layers: encoder layers.
        num_heads: attention heads per layer.
        intermediate: feed-forward width.
        seq_len: the (fixed) sequence length inputs must have.
        num_classes: size of the output.
    """

    def __init__(
        self, vocab_size: int, hidden: int, num_layers: int, num_heads: int, intermediate: int,
        seq_len: int, num_classes: int,
    ) -> None:
        super().__init__()
        self.embeddings = Embeddings(vocab_size, hidden, seq_len)
        self.layers = nn.ModuleList(
            EncoderLayer(hidden, num_heads, intermediate, seq_len) for _ in range(num_layers)
        )
        self.pooler = nn.Linear(hidden, hidden)
        self.pooler_act = nn.Tanh()
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(token_ids)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(self.pooler_act(self.pooler(x[:, 0])))


def bert_encoder(
    vocab_size: int = VOCAB_SIZE, hidden: int = 256, num_layers: int = 4, num_heads: int = 4,
    intermediate: int = 1024, seq_len: int = SEQ_LEN, num_classes: int = 2, *, seed: int = 0,
) -> BertClassifier:
    """Build the BERT-style classifier with deterministic weights, in eval mode.

    The defaults (4 layers, width 256, 64 tokens) run a batch in milliseconds on a CPU.

    Args:
        vocab_size: number of token ids.
        hidden: model width; a multiple of num_heads.
        num_layers: encoder layers.
        num_heads: attention heads per layer.
        intermediate: feed-forward width.
        seq_len: the sequence length inputs must have.
        num_classes: size of the output.
        seed: seed of the local generator the weights come from.

    Returns:
        The model; input int64 token ids (batch, seq_len), output (batch, num_classes).
    """
    return build_seeded(
        lambda: BertClassifier(
            vocab_size, hidden, num_layers, num_heads, intermediate, seq_len, num_classes
        ),
        seed,
    )


def token_batch(
    batch: int, generator: torch.Generator, vocab_size: int = VOCAB_SIZE, seq_len: int = SEQ_LEN,
) -> tuple:
    """Uniform random int64 token ids shaped (batch, seq_len)."""
    return (torch.randint(0, vocab_size, (batch, seq_len), generator=generator),)

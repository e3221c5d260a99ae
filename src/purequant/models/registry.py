"""The model zoo registry: an immutable name -> `ModelEntry` mapping.

Entries are frozen values. `build()` returns a fresh module each call (modules are mutable, so
the registry never hands out a shared one); inputs come from local generators with fixed seeds,
so everything here is deterministic and leaves torch's global RNG untouched.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterator, Mapping

import torch
from attrs import field, frozen
from torch import nn

from ..errors import ConfigError
from . import bert, chain, digits, lstm, mobilenet, perceptron, resnet

Batch = tuple[torch.Tensor, ...]

# Example inputs and calibration batch i use different seeds, so calibration never sees the
# exact tensors a test then evaluates on.
EXAMPLE_SEED = 0
CALIBRATION_SEED = 1

CHAIN_BLOCKS = 100  # the zoo's chains: 302 fx nodes; use residual_chain_for_nodes for more


class UnknownModelError(ConfigError, LookupError):
    """A model name that is not in the zoo.

    A LookupError too, so code that catches a failed lookup generically still works.
    """


@frozen
class ModelEntry:
    """One zoo model: how to build it and how to feed it.

    Attributes:
        name: the registry key.
        description: one line saying what the model is for.
        factory: builds a fresh, deterministic model in eval mode.
        make_batch: `(batch, generator) -> inputs`, the model's positional inputs.
        output_shape: shape of the output without the batch dimension.
        leaf_modules: module types a torch.fx tracer must keep as leaves beyond its defaults
            (every current entry traces with plain `torch.fx.symbolic_trace`, so all are empty).
    """

    name: str
    description: str
    factory: Callable[[], nn.Module] = field(repr=False)
    make_batch: Callable[[int, torch.Generator], Batch] = field(repr=False)
    output_shape: tuple[int, ...]
    leaf_modules: tuple[type[nn.Module], ...] = ()

    def build(self) -> nn.Module:
        """A new instance of the model: bit-identical parameters on every call, eval mode."""
        return self.factory()

    def example_inputs(self, batch: int = 1) -> Batch:
        """The model's example inputs for `batch` samples; the same tensors on every call."""
        return self.make_batch(batch, _generator(EXAMPLE_SEED))

    def calibration_batches(self, n: int, batch: int = 4) -> Iterator[Batch]:
        """Yield `n` deterministic random input tuples of `batch` samples each.

        Batch i depends only on i and `batch`, so the first k of `n` batches equal
        `calibration_batches(k, batch)`.
        """
        for i in range(n):
            yield self.make_batch(batch, _generator(CALIBRATION_SEED + i))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def _entries() -> tuple[ModelEntry, ...]:
    partial = functools.partial
    conv_map = (chain.WIDTH, chain.SPATIAL, chain.SPATIAL)
    return (
        ModelEntry(
            "resnet18", "ResNet-18 (torchvision architecture), 3x224x224 -> 1000",
            factory=resnet.resnet18, make_batch=resnet.image_batch, output_shape=(1000,),
        ),
        ModelEntry(
            "mobilenet_v2", "MobileNetV2 (torchvision architecture), 3x224x224 -> 1000",
            factory=mobilenet.mobilenet_v2, make_batch=resnet.image_batch, output_shape=(1000,),
        ),
        ModelEntry(
            "bert", "4-layer BERT-style encoder, 64 token ids -> 2 classes",
            factory=bert.bert_encoder, make_batch=bert.token_batch, output_shape=(2,),
        ),
        ModelEntry(
            "lstm", "Embedding -> LSTM -> Linear text classifier, 32 token ids -> 2 classes",
            factory=lstm.lstm_text, make_batch=lstm.token_batch, output_shape=(2,),
        ),
        ModelEntry(
            "mlp", "MLP 64 -> 128 -> 128 -> 10 with ReLUs",
            factory=perceptron.mlp, make_batch=perceptron.feature_batch, output_shape=(10,),
        ),
        ModelEntry(
            "digits", "small conv-bn-relu CNN for 1x8x8 digits -> 10 (the demo model)",
            factory=digits.digits_cnn, make_batch=digits.digit_batch, output_shape=(10,),
        ),
        ModelEntry(
            "chain_conv", f"{CHAIN_BLOCKS} blocks of x + relu(conv3x3(x)) on 16x8x8 maps",
            factory=partial(chain.residual_chain, CHAIN_BLOCKS, "conv"),
            make_batch=partial(chain.chain_batch, kind="conv"), output_shape=conv_map,
        ),
        ModelEntry(
            "chain_linear", f"{CHAIN_BLOCKS} blocks of x + relu(linear(x)), width 16",
            factory=partial(chain.residual_chain, CHAIN_BLOCKS, "linear"),
            make_batch=partial(chain.chain_batch, kind="linear"), output_shape=(chain.WIDTH,),
        ),
    )


ZOO: Mapping[str, ModelEntry] = types.MappingProxyType({e.name: e for e in _entries()})
"""Every zoo model by name; read-only."""


def get(name: str) -> ModelEntry:
    """The zoo entry called `name`.

    Raises:
        UnknownModelError: `name` is not in the zoo; the message lists the valid names.
    """
    try:
        return ZOO[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; the zoo has: {', '.join(sorted(ZOO))}",
            hint="pick one of those names, or build a model directly from purequant.models",
        ) from None

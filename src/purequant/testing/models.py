"""Recipes of small real models: conv/bn/relu/pool/add/cat chains with a flatten/linear head.

A `ModelRecipe` is plain data; `build_model(recipe)` makes an `nn.Module` in eval mode whose
forward torch.fx traces into `call_module` nodes for every layer (`conv0`, `bn1`, `act2`, `fc4`, ...),
`call_function`/`call_method` nodes for functional relu, residual adds, channel cats and
flattens. Parameters and batch-norm statistics come from a local generator seeded by the
recipe: building a model never touches torch's global RNG (layers are made with
`torch.nn.utils.skip_init`, which skips their default, global-RNG init).

Layers are total: an `Add` or `Cat` picks its second operand among earlier values of a
compatible shape by a look-back offset (itself when there is none), and a `Pool` on a 1-pixel
map uses a 1x1 window, so every recipe, and every shrink of one, builds a working model.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from hypothesis import strategies as st
from torch import nn

__all__ = [
    "Add", "BatchNorm", "Cat", "Conv", "Flatten", "Head", "Linear", "ModelRecipe", "Pool", "ReLU",
    "RecipeModel", "build_model", "example_input", "model_recipes",
]


# --------------------------------------------------------------------------- recipe data
class Conv(NamedTuple):
    """`nn.Conv2d(c, out_channels, kernel, stride, padding=kernel // 2, bias=bias)`."""

    out_channels: int
    kernel: int = 3
    stride: int = 1
    bias: bool = True


class BatchNorm(NamedTuple):
    """`nn.BatchNorm2d` in the body, `nn.BatchNorm1d` in the head (eval mode, random stats)."""


class ReLU(NamedTuple):
    """A relu: `module` (nn.ReLU), `function` (torch.relu) or `method` (x.relu())."""

    style: str = "module"


class Add(NamedTuple):
    """A residual add with an earlier value of the same shape: `+` (style `operator`) or
    `torch.add` (style `function`)."""

    back: int = 0
    style: str = "operator"


class Cat(NamedTuple):
    """`torch.cat([x, earlier], dim=1)` with an earlier value of compatible shape."""

    back: int = 0


class Pool(NamedTuple):
    """`nn.MaxPool2d(2)` (style `max`) or `nn.AvgPool2d(2)` (style `avg`); 1x1 on a 1-pixel map."""

    style: str = "max"


class Flatten(NamedTuple):
    """From feature maps to vectors: `module` (nn.Flatten), `function` (torch.flatten(x, 1)),
    `method` (x.flatten(1)), `view` (x.view(x.size(0), -1)) or `avgpool`
    (nn.AdaptiveAvgPool2d(1) then torch.flatten)."""

    style: str = "module"


class Linear(NamedTuple):
    """`nn.Linear(features, out_features, bias=bias)`."""

    out_features: int
    bias: bool = True


class Head(NamedTuple):
    """A flatten followed by vector layers (Linear, BatchNorm, ReLU, Add, Cat)."""

    flatten: Flatten
    layers: tuple = ()


class ModelRecipe(NamedTuple):
    """A whole model: input shape, seed, feature-map layers and an optional head."""

    seed: int
    batch: int
    channels: int
    height: int
    width: int
    body: tuple = ()
    head: Head | None = None


class Step(NamedTuple):
    """One step of a built model's forward: `kind`, the submodule it calls, the index of a
    second operand among earlier values."""

    kind: str
    name: str | None = None
    operand: int | None = None


# --------------------------------------------------------------------------- the module
class RecipeModel(nn.Module):
    """The model a recipe builds. Its forward interprets `plan`, plain data fixed at build
    time, so torch.fx unrolls it into a flat graph."""

    def __init__(self, recipe: ModelRecipe, plan: tuple[Step, ...], modules: dict[str, nn.Module]):
        super().__init__()
        self.recipe = recipe
        self.plan = plan
        for name, module in modules.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [x]
        for step in self.plan:
            values.append(self._run(step, values))
        return values[-1]

    def _run(self, step: Step, values: list) -> Any:
        v, kind = values[-1], step.kind
        if kind == "module":
            return getattr(self, step.name)(v)
        if kind == "relu_function":
            return torch.relu(v)
        if kind == "relu_method":
            return v.relu()
        if kind == "add_operator":
            return v + values[step.operand]
        if kind == "add_function":
            return torch.add(v, values[step.operand])
        if kind == "cat":
            return torch.cat([v, values[step.operand]], dim=1)
        if kind == "flatten_function":
            return torch.flatten(v, 1)
        if kind == "flatten_method":
            return v.flatten(1)
        if kind == "flatten_view":
            return v.view(v.size(0), -1)
        raise ValueError(f"unknown step kind {kind!r}")


# --------------------------------------------------------------------------- building
class _Build:
    """Mutable state of one `build_model` call (local to it; never escapes)."""

    def __init__(self, recipe: ModelRecipe) -> None:
        self.shapes: list[tuple[int, ...]] = [(recipe.channels, recipe.height, recipe.width)]
        self.plan: list[Step] = []
        self.modules: dict[str, nn.Module] = {}

    def module(self, prefix: str, module: nn.Module, shape: tuple[int, ...]) -> None:
        name = f"{prefix}{len(self.plan)}"
        self.modules[name] = module
        self.step(Step("module", name), shape)

    def step(self, step: Step, shape: tuple[int, ...]) -> None:
        self.plan.append(step)
        self.shapes.append(shape)

    def operand(self, back: int, fits) -> int:
        """Index of an earlier value that `fits` the current one, `back` steps back (mod)."""
        now = self.shapes[-1]
        found = [j for j in range(len(self.shapes) - 1) if fits(self.shapes[j], now)]
        return found[-1 - back % len(found)] if found else len(self.shapes) - 1


def _same(a: tuple, b: tuple) -> bool:
    return a == b


def _catable(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and a[1:] == b[1:]


def _add_layer(b: _Build, layer: Any) -> None:
    shape = b.shapes[-1]
    if isinstance(layer, Conv):
        c, h, w = _map_shape(shape, layer)
        pad = layer.kernel // 2
        conv = nn.utils.skip_init(nn.Conv2d, c, layer.out_channels, layer.kernel,
                                  stride=layer.stride, padding=pad, bias=layer.bias)
        b.module("conv", conv, (layer.out_channels, (h - 1) // layer.stride + 1, (w - 1) // layer.stride + 1))
    elif isinstance(layer, BatchNorm):
        cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        b.module("bn", nn.utils.skip_init(cls, shape[0]), shape)
    elif isinstance(layer, ReLU):
        if layer.style == "module":
            b.module("act", nn.ReLU(), shape)  # not "relu6": that reads as nn.ReLU6
        else:
            b.step(Step(f"relu_{layer.style}"), shape)
    elif isinstance(layer, Add):
        b.step(Step(f"add_{layer.style}", operand=b.operand(layer.back, _same)), shape)
    elif isinstance(layer, Cat):
        j = b.operand(layer.back, _catable)
        b.step(Step("cat", operand=j), (shape[0] + b.shapes[j][0], *shape[1:]))
    elif isinstance(layer, Pool):
        c, h, w = _map_shape(shape, layer)
        k = 2 if min(h, w) >= 2 else 1
        b.module("pool", (nn.MaxPool2d if layer.style == "max" else nn.AvgPool2d)(k), (c, h // k, w // k))
    elif isinstance(layer, Linear):
        if len(shape) != 1:
            raise ValueError(f"{layer!r} needs vectors; put it in the head, after a Flatten")
        fc = nn.utils.skip_init(nn.Linear, shape[0], layer.out_features, bias=layer.bias)
        b.module("fc", fc, (layer.out_features,))
    else:
        raise ValueError(f"not a layer recipe: {layer!r}")


def _map_shape(shape: tuple[int, ...], layer: Any) -> tuple[int, ...]:
    if len(shape) != 3:
        raise ValueError(f"{layer!r} needs feature maps; it cannot follow a Flatten")
    return shape


def _add_flatten(b: _Build, flatten: Flatten) -> None:
    c, h, w = _map_shape(b.shapes[-1], flatten)
    if flatten.style == "module":
        b.module("flatten", nn.Flatten(), (c * h * w,))
    elif flatten.style == "avgpool":
        b.module("avgpool", nn.AdaptiveAvgPool2d(1), (c, 1, 1))
        b.step(Step("flatten_function"), (c,))
    else:
        b.step(Step(f"flatten_{flatten.style}"), (c * h * w,))


def _init(module: nn.Module, seed: int) -> None:
    """Fill every parameter and buffer from a generator seeded with `seed` (named order)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, sub in sorted(module.named_modules()):
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                fan_in = sub.weight[0].numel()
                bound = fan_in ** -0.5
                sub.weight.uniform_(-bound, bound, generator=g)
                if sub.bias is not None:
                    sub.bias.uniform_(-bound, bound, generator=g)
            elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
                # Not the identity on purpose: a wrong conv-bn fold would go unnoticed.
                sub.weight.uniform_(0.5, 1.5, generator=g)
                sub.bias.uniform_(-0.5, 0.5, generator=g)
                sub.running_mean.uniform_(-0.5, 0.5, generator=g)
                sub.running_var.uniform_(0.5, 1.5, generator=g)
                sub.num_batches_tracked.zero_()


def build_model(recipe: ModelRecipe) -> RecipeModel:
    """The model a recipe describes, in eval mode, deterministic in the recipe.

    Args:
        recipe: a ModelRecipe (see `model_recipes()`).

    Returns:
        A RecipeModel: same recipe, bit-identical parameters; torch's global RNG untouched.

    Raises:
        ValueError: a vector layer (Linear) in the body or a map layer (Conv, Pool) in the head.
    """
    b = _Build(recipe)
    for layer in recipe.body:
        _add_layer(b, layer)
    if recipe.head is not None:
        _add_flatten(b, recipe.head.flatten)
        for layer in recipe.head.layers:
            _add_layer(b, layer)
    model = RecipeModel(recipe, tuple(b.plan), b.modules)
    _init(model, recipe.seed)
    return model.eval()


def example_input(recipe: ModelRecipe) -> torch.Tensor:
    """A fresh input tensor for the recipe's model, deterministic in the recipe's seed."""
    g = torch.Generator().manual_seed(recipe.seed + 1)
    return torch.randn((recipe.batch, recipe.channels, recipe.height, recipe.width), generator=g)


# --------------------------------------------------------------------------- strategies
_BACK = st.integers(0, 4)
_RELU = st.builds(ReLU, st.sampled_from(["module", "function", "method"]))
_ADD = st.builds(Add, _BACK, st.sampled_from(["operator", "function"]))


def _body_layers(max_channels: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        _RELU,
        st.builds(Conv, st.integers(1, max_channels), st.sampled_from([3, 1]),
                  st.sampled_from([1, 2]), st.booleans()),
        st.just(BatchNorm()),
        _ADD,
        st.builds(Cat, _BACK),
        st.builds(Pool, st.sampled_from(["max", "avg"])),
    )


def _head_layers(max_channels: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(Linear, st.integers(1, max_channels), st.booleans()),
        _RELU,
        st.just(BatchNorm()),
        _ADD,
        st.builds(Cat, _BACK),
    )


def model_recipes(
    *, max_layers: int = 6, max_head: int = 3, max_channels: int = 6, max_size: int = 6
) -> st.SearchStrategy[ModelRecipe]:
    """Recipes of small conv nets with an optional flatten/linear head.

    Args:
        max_layers: most feature-map layers (conv, bn, relu, pool, residual add, channel cat).
        max_head: most layers after the flatten (linear, bn, relu, add, cat).
        max_channels: most input channels, conv output channels and linear features.
        max_size: largest input height and width.
    """
    flatten = st.builds(Flatten, st.sampled_from(["module", "function", "method", "view", "avgpool"]))
    head = st.none() | st.builds(Head, flatten, st.lists(_head_layers(max_channels), max_size=max_head).map(tuple))
    return st.builds(
        ModelRecipe,
        seed=st.integers(0, 2**32 - 1),
        batch=st.integers(1, 2),
        channels=st.integers(1, max_channels),
        height=st.integers(1, max_size),
        width=st.integers(1, max_size),
        body=st.lists(_body_layers(max_channels), max_size=max_layers).map(tuple),
        head=head,
    )

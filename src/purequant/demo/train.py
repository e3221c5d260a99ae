"""The demo's data and training: scikit-learn's 8x8 digits, a fixed split, a few epochs of Adam.

Deterministic: the split, the shuffling and the model's initial weights come from local
generators seeded with `seed`, and the caller runs it on one thread (`run.one_thread`). Torch's
global random state is never read.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from attrs import frozen
from torch import nn

TEST_FRACTION = 0.2
EPOCHS = 4
BATCH = 64
LEARNING_RATE = 3e-3


@frozen(eq=False)
class Digits:
    """The digits data set as tensors, split once.

    Attributes:
        train_x, test_x: images (n, 1, 8, 8), pixel intensities scaled to [0, 1].
        train_y, test_y: labels 0-9 (int64).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_digits_split(seed: int = 0) -> Digits:
    """sklearn's 1,797 digit images (shipped with scikit-learn, no download), split 80/20."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(x) * TEST_FRACTION)
    test, train = perm[:n_test], perm[n_test:]
    return Digits(x[train], y[train], x[test], y[test])


Progress = Callable[[int, int, int, float], None]
"""progress(epoch, step, steps_per_epoch, loss) after every optimiser step."""


def train(model: nn.Module, data: Digits, *, seed: int = 0, epochs: int = EPOCHS,
          progress: Progress | None = None) -> nn.Module:
    """Train `model` in place with Adam and cross-entropy; return it in eval mode.

    The model is the demo's own freshly built one (training is the one place the demo mutates a
    module; purequant itself never does).
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    n = len(data.train_x)
    steps = (n + BATCH - 1) // BATCH
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for step in range(steps):
            idx = order[step * BATCH:(step + 1) * BATCH]
            loss = nn.functional.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None:
                progress(epoch, step, steps, loss.item())
    return model.eval()


def progress_bar(stream, epochs: int = EPOCHS, width: int = 24) -> Progress:
    """A one-line progress bar redrawn with `\\r` on `stream` (stderr)."""

    def show(epoch: int, step: int, steps: int, loss: float) -> None:
        done = (epoch * steps + step + 1) / (epochs * steps)
        filled = round(done * width)
        if filled == round((done - 1 / (epochs * steps)) * width) and step + 1 < steps:
            return  # redraw only when the bar grows, and at the end of each epoch
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= 1 else ""
        stream.write(f"\rtraining  [{bar}] epoch {epoch + 1}/{epochs}  loss {loss:.3f}{end}")
        stream.flush()

    return show

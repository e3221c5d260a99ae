"""What the demo measures: accuracy, SQNR, size of the parameters, latency.

All of it runs under `torch.no_grad()` on whatever thread count the caller set (the demo sets
one). Latency interleaves the two models run by run, so a noisy neighbour slows both alike,
and reports medians.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

WARMUP = 10


def first_tensor(out: Any) -> torch.Tensor:
    """The output tensor of a model that may return a tuple or list (the first tensor in it)."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


@torch.no_grad()
def logits(model: Callable, inputs: Sequence[Any]) -> torch.Tensor:
    return first_tensor(model(*inputs)).float()


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max is the label."""
    return (scores.argmax(1) == labels).float().mean().item()


def sqnr_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when equal)."""
    noise = (reference - other).double().pow(2).sum().item()
    signal = reference.double().pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def param_bytes(module: nn.Module) -> int:
    """Bytes of every tensor the module holds: its state_dict, plus the quantized constants.

    purequant's quantized modules keep prepacked weights as TorchScript objects outside the
    state_dict; those are unpacked and counted as their int8 weight, bias and per-channel
    scales and zero points. fp16 packed weights unpack to float32 but are stored in half
    precision, so a weight read by an `*_fp16` kernel counts 2 bytes per element.
    """
    seen: dict[str, int] = {k: tensor_bytes(t) for k, t in module.state_dict().items()}
    graph = getattr(module, "graph", None)
    for node in graph.nodes if graph is not None else ():
        if node.op == "get_attr" and node.target not in seen:
            half = any(str(u.target).endswith("_fp16") for u in node.users)
            seen[node.target] = object_bytes(_resolve(module, node.target), half_weight=half)
    return sum(seen.values())


def _resolve(module: nn.Module, path: str) -> Any:
    obj: Any = module
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def tensor_bytes(t: torch.Tensor) -> int:
    size = t.numel() * t.element_size()
    if t.is_quantized and t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        size += tensor_bytes(t.q_per_channel_scales()) + tensor_bytes(t.q_per_channel_zero_points())
    return size


def object_bytes(obj: Any, *, half_weight: bool = False) -> int:
    """Bytes of a tensor, or of the tensors a packed-params object unpacks to (0 otherwise)."""
    if isinstance(obj, torch.Tensor):
        return tensor_bytes(obj)
    unpack = getattr(obj, "unpack", None)
    if unpack is None:
        return 0
    tensors = [t for t in unpack() if isinstance(t, torch.Tensor)]
    if half_weight and tensors:
        return tensors[0].numel() * 2 + sum(tensor_bytes(t) for t in tensors[1:])
    return sum(tensor_bytes(t) for t in tensors)


@torch.no_grad()
def interleaved_latency(models: Sequence[Callable], inputs: Sequence[Any], *,
                        budget_s: float = 1.5, max_runs: int = 300) -> list[float]:
    """Median seconds per call of each model on `inputs`, runs interleaved model by model.

    Warm-up calls first; the number of runs is chosen to fit `budget_s` (at least 5).
    """
    for _ in range(WARMUP):
        for m in models:
            m(*inputs)
    start = time.perf_counter()
    for m in models:
        m(*inputs)
    per_round = max(time.perf_counter() - start, 1e-6)
    runs = max(5, min(max_runs, int(budget_s / per_round)))
    times: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for m, out in zip(models, times):
            t0 = time.perf_counter()
            m(*inputs)
            out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]

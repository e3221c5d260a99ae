"""`fold_bn_many` is bit-identical to folding one job at a time (the arithmetic before batching).

`_one_by_one` is the per-fold implementation `fold_bn_many` replaced, kept here verbatim as the
reference: batching the per-channel float64 arithmetic must not move a single bit.
"""

from __future__ import annotations

import pytest
import torch

from purequant.stages._fuse_fold import FoldJob, _like, _scale_weight, fold_bn, fold_bn_many

_F64 = torch.float64


def _one_by_one(job: FoldJob) -> tuple[torch.Tensor, torch.Tensor]:
    weight, bias, bn, eps = job.weight, job.bias, job.bn, job.eps
    with torch.no_grad():
        mean, var = bn["running_mean"].to(_F64), bn["running_var"].to(_F64)
        gamma = bn["weight"].to(_F64) if bn["weight"] is not None else torch.ones_like(mean)
        beta = bn["bias"].to(_F64) if bn["bias"] is not None else torch.zeros_like(mean)
        scale = gamma * torch.rsqrt(var + eps)
        work = torch.promote_types(weight.dtype, torch.float32)
        w = _scale_weight(weight.to(work), scale.to(work), job.layout, job.groups)
        out_channels = w.shape[1] * job.groups if job.layout == "conv_transpose" else w.shape[0]
        b = bias.to(_F64) if bias is not None else torch.zeros(out_channels, dtype=_F64)
        b = (b - mean) * scale + beta
        new_w = w.to(weight.dtype)
        new_b = b.to(bias.dtype if bias is not None else weight.dtype)
    return _like(new_w, weight), _like(new_b, bias if bias is not None else weight)


def _job(g: torch.Generator, kind: str, dtype: torch.dtype, affine: bool, with_bias: bool) -> FoldJob:
    out, cin, groups = int(torch.randint(1, 40, (1,), generator=g)), 6, 1
    if kind == "conv":
        weight = torch.randn(out, cin, 3, 3, generator=g, dtype=dtype)
    elif kind == "conv_transpose":
        groups = 2
        out = 2 * (out // 2 + 1)
        weight = torch.randn(2 * cin, out // groups, 3, generator=g, dtype=dtype)
    else:
        weight = torch.randn(out, cin, generator=g, dtype=dtype)
    features = 1 if kind == "linear1" else out
    stats = {
        "running_mean": torch.randn(features, generator=g, dtype=dtype),
        "running_var": torch.rand(features, generator=g, dtype=dtype) * 3 + 1e-6,
        "weight": torch.randn(features, generator=g, dtype=dtype) if affine else None,
        "bias": torch.randn(features, generator=g, dtype=dtype) if affine else None,
    }
    bias = torch.nn.Parameter(torch.randn(out, generator=g, dtype=dtype)) if with_bias else None
    layout = "linear" if kind.startswith("linear") else kind
    eps = float(torch.rand(1, generator=g)) * 1e-3
    return FoldJob(torch.nn.Parameter(weight), bias, stats, eps, layout, groups)


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
    assert a.requires_grad == b.requires_grad
    assert torch.equal(a.view(-1).view(torch.uint8 if a.element_size() == 1 else torch.int16 if a.element_size() == 2
                                       else torch.int32 if a.element_size() == 4 else torch.int64),
                       b.view(-1).view(torch.uint8 if b.element_size() == 1 else torch.int16 if b.element_size() == 2
                                       else torch.int32 if b.element_size() == 4 else torch.int64))


@pytest.mark.parametrize("seed", range(6))
def test_batched_fold_is_bit_identical_to_one_by_one(seed):
    g = torch.Generator().manual_seed(seed)
    kinds = ("conv", "conv_transpose", "linear", "linear1")
    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    jobs = [_job(g, kinds[k % 4], dtypes[(k // 4 + seed) % 4] if seed % 2 else torch.float32,
                 affine=k % 3 != 0, with_bias=k % 2 == 0) for k in range(24)]
    batched = fold_bn_many(jobs)
    for job, (w, b) in zip(jobs, batched):
        ref_w, ref_b = _one_by_one(job)
        _same(w, ref_w)
        _same(b, ref_b)
        # Fresh tensors, never views of the batch's shared vectors.
        assert b.untyped_storage().nbytes() == b.numel() * b.element_size()


def test_inputs_are_not_mutated_and_single_fold_agrees():
    g = torch.Generator().manual_seed(7)
    job = _job(g, "conv", torch.float32, affine=True, with_bias=True)
    before = [t.clone() for t in (job.weight, job.bias, *job.bn.values()) if t is not None]
    w, b = fold_bn(job.weight, job.bias, job.bn, job.eps, layout=job.layout, groups=job.groups)
    after = [t for t in (job.weight, job.bias, *job.bn.values()) if t is not None]
    assert all(torch.equal(x, y) for x, y in zip(before, after))
    ref_w, ref_b = _one_by_one(job)
    _same(w, ref_w)
    _same(b, ref_b)
    assert fold_bn_many([]) == []

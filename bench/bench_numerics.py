"""Numerics (SQNR against float), model size, and peak memory of prepare + convert.

SQNR = 20 log10(||y_float|| / ||y_float - y_quant||) on one evaluation batch (the zoo's example
inputs at batch 8, a seed calibration never sees), every tool calibrated on the same batches.
The zoo's weights and inputs are random, so these figures compare toolchains, not accuracy.

Peak memory runs as a worker, one fresh process per tool and model:

    .venv/bin/python bench/bench_numerics.py --memory ours|torch.ao MODEL [--fallback]

It warms the tool up on the small digits CNN (imports, kernel caches), resets the kernel's
resident-set high-water mark, then measures that peak (VmHWM) above the resident set before
prepare + calibrate + convert, and, in a second pass of the same steps, the peak of Python
allocations (tracemalloc).
"""

from __future__ import annotations

import argparse
import gc
import io
import math
import os
import re
import sys
import tempfile
import tracemalloc

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import bench_recipes as R  # noqa: E402
from bench_timing import emit_json  # noqa: E402

import purequant  # noqa: E402
from purequant.models import ZOO  # noqa: E402

EVAL_BATCH = 8


def sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    noise = (ref.double() - out.double()).norm().item()
    return math.inf if noise == 0 else 20 * math.log10(ref.double().norm().item() / noise)


def first_tensor(out):
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out.dequantize() if out.is_quantized else out


def cpu_default(c: R.Case):
    """Our CPU-aware default for the case (static; the fallback applied if the case has one)."""
    from purequant.qconfig import cpu_aware_default

    spec = cpu_aware_default("x86").spec
    return R.FALLBACKS[c.name][1](spec) if c.fallback else spec


@torch.no_grad()
def numerics(name: str) -> dict:
    """SQNR of every variant against float, ours against torch.ao, and sizes."""
    c = R.usable_case(name)
    x = ZOO[name].example_inputs(EVAL_BATCH)
    ref = first_tensor(c.model(*x))
    variants = {
        "ours": lambda: R.ours_quantized(c),
        "ours default": lambda: R.ours_quantized(c, None if c.dynamic else cpu_default(c)),
        "torch.ao": lambda: R.ao_quantized(c),
    }
    if c.dynamic:
        variants["torch.ao eager"] = lambda: R.ao_eager_dynamic(c)
    models, outs, db = {}, {}, {}
    for key, make in variants.items():
        try:
            models[key] = make()
            outs[key] = first_tensor(models[key](*x))
            db[key] = sqnr(ref, outs[key])
        except Exception as ex:
            db[key] = R.first_line(ex)
    if "ours" in outs and "torch.ao" in outs:
        db["ours vs torch.ao"] = sqnr(outs["torch.ao"], outs["ours"])
    return {"label": c.label, "dynamic": c.dynamic, "fallback": c.fallback, "sqnr": db,
            "size": sizes(c.model, models.get("ours"), models.get("torch.ao")), "notes": c.notes}


# ------------------------------------------------------------------------------------ size
def saved_bytes(obj) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell()


def value_bytes(v) -> int:
    """Bytes of a tensor (quantized per-channel: with its scales and zero points), of the tensors
    a packed-params object unpacks to, or of the tensors inside a tuple/list; 0 for the rest."""
    if isinstance(v, torch.Tensor):
        size = v.numel() * v.element_size()
        if v.is_quantized and v.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                                              torch.per_channel_affine_float_qparams):
            size += value_bytes(v.q_per_channel_scales()) + value_bytes(v.q_per_channel_zero_points())
        return size
    if isinstance(v, (tuple, list)):
        return sum(value_bytes(x) for x in v)
    unpack = getattr(v, "unpack", None)
    if callable(unpack):
        return value_bytes(unpack())
    return 0


def param_bytes(module: torch.nn.Module) -> int:
    """Bytes of everything in the state_dict, plus constants a GraphModule reads with get_attr
    outside it (our prepacked weights), each counted once."""
    seen = {k: value_bytes(v) for k, v in module.state_dict().items()}
    graph = getattr(module, "graph", None)
    for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
        if node.op == "get_attr" and node.target not in seen:
            obj = module
            for part in node.target.split("."):
                obj = getattr(obj, part)
            seen[node.target] = value_bytes(obj)
    return sum(seen.values())


def sizes(float_model, ours, theirs) -> dict:
    out = {"float state_dict": saved_bytes(float_model.state_dict()),
           "float params": param_bytes(float_model)}
    if ours is not None:
        out["ours params"] = param_bytes(ours)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.pq")
            purequant.save(ours, path)
            out["ours file"] = os.path.getsize(path)
    if theirs is not None:
        out["torch.ao state_dict"] = saved_bytes(theirs.state_dict())
        out["torch.ao params"] = param_bytes(theirs)
    return out


# ---------------------------------------------------------------------------------- memory
def _phases(tool: str, c: R.Case) -> list:
    """prepare, calibrate, convert of one tool as three thunks, each taking the last's result."""
    import purequant

    def calibrate_ao(p):
        with torch.no_grad():
            for b in c.calibration:
                p(*b)
        return p

    if tool == "ours":
        return [lambda _: R.ours_prepare(c),
                lambda p: p if c.dynamic else purequant.calibrate(p, c.calibration), purequant.convert]
    return [lambda _: R.ao_prepare(c), lambda p: p if c.dynamic else calibrate_ao(p), R.ao_convert]


def _steps(tool: str, c: R.Case):
    value = None
    for phase in _phases(tool, c):
        value = phase(value)
    return value


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def _reset_peak() -> bool:
    """Reset the kernel's resident-set high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory(tool: str, name: str, fallback: bool, traced: bool = True) -> dict:
    """Peak RSS of each phase above the RSS before prepare, and peak traced Python allocations.

    The high-water mark (VmHWM) is reset at the start of each phase, so each phase's peak is its
    own (with what earlier phases left alive); where it cannot be reset the figure is a lower
    bound (`exact` False) whenever an earlier peak stayed above it. `traced`: also measure the
    Python peak with tracemalloc, in a second pass.
    """
    torch.set_num_threads(1)
    _steps(tool, R.case("digits"))  # warm-up: imports, caches, first-call work
    c = R.with_fallback(R.case(name)) if fallback else R.case(name)
    gc.collect()
    before, peaks, exact, value = _status_kib("VmRSS"), [], True, None
    for phase in _phases(tool, c):
        reset = _reset_peak()
        hwm_before = _status_kib("VmHWM")
        value = phase(value)
        hwm = _status_kib("VmHWM")
        peaks.append(max(0, hwm - before) * 1024)
        exact = exact and (reset or hwm > hwm_before)
    retained = max(0, _status_kib("VmRSS") - before) * 1024
    del value
    traced_peak = None
    if traced:  # a second pass, under tracemalloc
        gc.collect()
        tracemalloc.start()
        _steps(tool, c)
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"label": c.label, "rss_before": before * 1024, "peak_rss_increase": max(peaks),
            "phases": dict(zip(("prepare", "calibrate", "convert"), peaks)), "retained": retained,
            "exact": exact, "python_peak": traced_peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", nargs=2, metavar=("TOOL", "MODEL"), required=True)
    ap.add_argument("--fallback", action="store_true")
    opts = ap.parse_args()
    emit_json(memory(*opts.memory, opts.fallback))


if __name__ == "__main__":
    main()

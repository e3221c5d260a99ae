"""Test support for the fuse stage: hand-built specs, an IR interpreter, emission via trace.

Hand-built graphs have no module objects, so `run` interprets them directly, materialising
every module with `purequant.nn.build_module`; traced models go through purequant.trace's
emitter (`emit`), with `build_module` for the specs a stage made or changed.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx
from pyrsistent import PMap

from purequant.ir import ModuleSpec
from purequant.nn import build_module
from purequant.qconfig.names import resolve_qualified_name
from purequant.trace.values import to_fx  # IR value -> Python value, env-generic


# ------------------------------------------------------------------------------ specs by hand
def conv_spec(path: str, dim: int, cin: int, cout: int, *, bias: bool = True, groups: int = 1,
              transpose: bool = False, training: bool = False, k: int = 3, padding: int = 1) -> ModuleSpec:
    kind = "ConvTranspose" if transpose else "Conv"
    attrs = {
        "training": training, "in_channels": cin, "out_channels": cout, "kernel_size": (k,) * dim,
        "stride": (1,) * dim, "padding": (padding,) * dim, "dilation": (1,) * dim,
        "transposed": transpose, "output_padding": (0,) * dim, "groups": groups,
        "padding_mode": "zeros",
    }
    return ModuleSpec(f"torch.nn.{kind}{dim}d", attrs,
                      {"weight": f"{path}.weight", "bias": f"{path}.bias" if bias else None})


def linear_spec(path: str, fin: int, fout: int, *, bias: bool = True, training: bool = False) -> ModuleSpec:
    return ModuleSpec("torch.nn.Linear", {"training": training, "in_features": fin, "out_features": fout},
                      {"weight": f"{path}.weight", "bias": f"{path}.bias" if bias else None})


def bn_spec(path: str, dim: int, c: int, *, training: bool = False, affine: bool = True,
            stats: bool = True, eps: float = 1e-5) -> ModuleSpec:
    attrs = {"training": training, "num_features": c, "eps": eps, "momentum": 0.1,
             "affine": affine, "track_running_stats": stats}
    names = {"weight": f"{path}.weight" if affine else None, "bias": f"{path}.bias" if affine else None,
             "running_mean": f"{path}.running_mean" if stats else None,
             "running_var": f"{path}.running_var" if stats else None,
             "num_batches_tracked": f"{path}.num_batches_tracked" if stats else None}
    return ModuleSpec(f"torch.nn.BatchNorm{dim}d", attrs, names)


def relu_spec(*, training: bool = False, inplace: bool = False) -> ModuleSpec:
    return ModuleSpec("torch.nn.ReLU", {"training": training, "inplace": inplace})


def random_tensors(modules: dict[str, ModuleSpec], seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Tensors for every path the specs name, shaped from their attrs, from a local generator."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for spec in modules.values():
        for name, path in spec.params.items():
            if path is not None and path not in out:
                out[path] = _tensor_for(spec, name, g, dtype)
    return out


def _tensor_for(spec: ModuleSpec, name: str, g: torch.Generator, dtype) -> torch.Tensor:
    a = spec.attrs
    if spec.type.startswith("torch.nn.BatchNorm"):
        c = a["num_features"]
        if name == "num_batches_tracked":
            return torch.tensor(7)
        low, high = {"weight": (0.5, 1.5), "bias": (-0.5, 0.5), "running_mean": (-0.5, 0.5),
                     "running_var": (0.5, 2.0)}[name]
        return (low + (high - low) * torch.rand(c, generator=g, dtype=torch.float64)).to(dtype)
    if spec.type == "torch.nn.Linear":
        shape = (a["out_features"], a["in_features"]) if name == "weight" else (a["out_features"],)
        fan_in = a["in_features"]
    else:
        cin, cout, groups = a["in_channels"], a["out_channels"], a["groups"]
        lead = (cin, cout // groups) if a["transposed"] else (cout, cin // groups)
        k = 1
        for s in a["kernel_size"]:
            k *= s
        shape = (*lead, *a["kernel_size"]) if name == "weight" else (cout,)
        fan_in = (cin // groups) * k
    t = torch.randn(shape, generator=g, dtype=torch.float64) / fan_in ** 0.5
    return torch.nn.Parameter(t.to(dtype))


# ------------------------------------------------------------------------------ interpreter
def run(graph, params: PMap, modules: PMap, *inputs: torch.Tensor) -> Any:
    """Evaluate `graph` on `inputs`: call_module nodes run `build_module(spec, params)`."""
    built = {n.target: build_module(modules[n.target], params)
             for n in graph.node_list() if n.op == "call_module"}
    env: dict[str, Any] = {}
    feed = iter(inputs)

    def load(v: Any) -> Any:
        return to_fx(v, env)

    with torch.no_grad():
        for n in graph.node_list():
            args, kwargs = load(n.args), {k: load(v) for k, v in n.kwargs.items()}
            if n.op == "placeholder":
                env[n.id] = next(feed)
            elif n.op == "get_attr":
                env[n.id] = params[n.target]
            elif n.op == "call_function":
                env[n.id] = _function(n.target)(*args, **kwargs)
            elif n.op == "call_method":
                env[n.id] = getattr(args[0], n.target)(*args[1:], **kwargs)
            elif n.op == "call_module":
                env[n.id] = built[n.target](*args, **kwargs)
            else:
                return args[0]
    raise AssertionError("graph has no output")


def _function(name: str):
    return {"operator.add": operator.add}.get(name) or resolve_qualified_name(name)


def emit(traced, graph, params: PMap, modules: PMap) -> torch.fx.GraphModule:
    """A GraphModule through purequant.trace's emitter: the user's module objects where a spec
    is unchanged, `build_module` for the specs a stage made or changed."""
    from purequant.trace import emit_graph_module

    objects = dict(traced.module_objects)
    for path, spec in modules.items():
        if traced.modules.get(path) != spec:
            objects[path] = build_module(spec, params)
    return emit_graph_module(graph, params=params, module_objects=objects, modules=modules,
                             callables=traced.callables)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|: the error relative to the output's scale."""
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / (scale if scale > 0 else 1.0)


def snapshot(params: PMap) -> dict[str, tuple[torch.Tensor, int]]:
    """A copy of every tensor with its version counter, to check nothing was mutated."""
    return {k: (t.detach().clone(), t._version) for k, t in params.items()}


def unchanged(params: PMap, snap: dict[str, tuple[torch.Tensor, int]]) -> bool:
    return set(params) == set(snap) and all(
        torch.equal(params[k], c) and params[k]._version == v for k, (c, v) in snap.items())

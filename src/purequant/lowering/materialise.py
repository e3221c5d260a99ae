"""The shell side of lowering: a lowered graph as a runnable GraphModule, and op resolution.

    gm = lowered_module(graph, params, modules, module_objects=...)
    with purequant.backends.quantized_engine("x86"):
        y = gm(x)

The GraphModule holds the params entries its get_attr nodes read, packed-weight objects
included (they are attributes like any other), and builds modules the graph still calls from
their specs unless `module_objects` supplies them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import torch

from ..ir import Graph
from ..qconfig.names import resolve_qualified_name
from ..trace import emit_graph_module

# torch.ops namespaces registered by importing a module rather than by `import torch`.
_OP_LIBRARIES = {"torch.ops.quantized_decomposed.": "torch.ao.quantization.fx._decomposed"}


def resolve_op(target: str) -> Any:
    """The callable a call_function target names, loading its op library first if needed."""
    for prefix, module in _OP_LIBRARIES.items():
        if target.startswith(prefix):
            importlib.import_module(module)
    return resolve_qualified_name(target)


def lowered_module(
    graph: Graph,
    params: Mapping[str, Any],
    modules: Mapping[str, Any],
    *,
    module_objects: Mapping[str, torch.nn.Module] | None = None,
    callables: Mapping[str, Any] | None = None,
    class_name: str = "QuantizedModule",
) -> torch.fx.GraphModule:
    """A GraphModule running a lowered (and possibly folded) graph. O(n) plus fx codegen.

    The module shares the params' tensors and packed weights (nothing is copied). Packed
    weights belong to the engine that was current when `fold_weights` ran; run the module
    under that engine (`purequant.backends.quantized_engine`).
    """
    return emit_graph_module(graph, params=params, module_objects=module_objects or {}, modules=modules,
                             callables=callables, class_name=class_name)

"""The torch.fx boundary: trace a model into a purequant Graph, and materialise one back.

    traced = purequant.trace(model)              # torch.fx -> Traced (IR graph + tables)
    gm = purequant.to_graph_module(traced)        # IR -> torch.fx.GraphModule, bit-identical
    gm = emit_graph_module(graph, params=..., module_objects=..., modules=...)  # any stage

Note: `purequant.trace` (the attribute) is the function; import this package's other names
with `from purequant.trace import emit_graph_module`.
"""

from .emit import emit_graph_module
from .instantiate import module_from_spec
from .traced import Traced, from_fx, to_graph_module, trace

__all__ = ["Traced", "emit_graph_module", "from_fx", "module_from_spec", "to_graph_module", "trace"]

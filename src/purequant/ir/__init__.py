"""The immutable graph IR: nodes, the persistent graph, the builder, checks and the text format."""

from .builder import GraphBuilder
from .canonical import canonicalize, digest
from .check import check_graph, neighbourhood
from .gcpause import paused_gc
from .graph import Graph
from .module_spec import ModuleSpec
from .node import OPS, Node, Ref, Slice, Sym, as_pmap, iter_refs, map_value
from .text import format_node, format_value, parse_graph, parse_node, print_graph

__all__ = [
    "OPS", "as_pmap", "Graph", "GraphBuilder", "ModuleSpec", "Node", "Ref", "Slice", "Sym", "canonicalize", "check_graph",
    "digest", "format_node", "format_value", "iter_refs", "map_value", "neighbourhood",
    "parse_graph", "parse_node", "paused_gc", "print_graph",
]

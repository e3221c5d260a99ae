"""Canonical form and content digest.

Two graphs that differ only in their ids (and provenance) have the same canonical form: ids are
renamed `v0, v1, ...` in order, placeholders keep their names (they are the signature).
"""

from __future__ import annotations

import hashlib

from .graph import Graph
from .node import Node, Ref
from .text import print_graph


def canonicalize(graph: Graph) -> Graph:
    """The graph with positional ids and no provenance. O(n)."""
    rename: dict[str, str] = {}
    nodes = []
    for k, node in enumerate(graph.node_list()):
        new = node.target if node.op == "placeholder" and node.target.isidentifier() else f"v{k}"
        if new in rename.values():
            new = f"v{k}"
        rename[node.id] = new
        n = node.map_refs(lambda i: Ref(rename[i]))
        nodes.append(Node(new, n.op, n.target, n.args, n.kwargs))
    return Graph.from_nodes(nodes)


def digest(graph: Graph, *, canonical: bool = True) -> str:
    """sha256 of the graph's text without provenance (canonical form by default). O(n)."""
    g = canonicalize(graph) if canonical else graph
    text = print_graph(g, meta=False)
    if not canonical:
        pass
    # Counters header is history, not content: digest only the node lines.
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#!"))
    return hashlib.sha256(body.encode()).hexdigest()

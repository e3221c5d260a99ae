"""Canonical form and content digest.

Two graphs that differ only in their ids (and provenance) have the same canonical form: ids are
renamed `v0, v1, ...` in order, placeholders keep their names (they are the signature).
"""

from __future__ import annotations

import hashlib

from .graph import Graph
from .node import ID_RE, Node, Ref
from .text import format_node


def canonicalize(graph: Graph) -> Graph:
    """The graph with positional ids and no provenance. O(n)."""
    # Placeholders named like ids keep their names (first one wins); every other node is
    # `v<k>`, with underscores appended while that clashes with a kept name (`v1_` when a
    # placeholder is called `v1`). Both depend only on structure and targets, never on ids.
    kept: dict[str, str] = {}
    for node in graph.node_list():
        if node.op == "placeholder" and ID_RE.match(node.target) and node.target not in kept.values():
            kept[node.id] = node.target
    taken = set(kept.values())
    rename: dict[str, str] = {}
    nodes = []
    for k, node in enumerate(graph.node_list()):
        new = kept.get(node.id)
        if new is None:
            new = f"v{k}"
            while new in taken:
                new += "_"
        rename[node.id] = new
        n = node.map_refs(lambda i: Ref(rename[i]))
        nodes.append(Node(new, n.op, n.target, n.args, n.kwargs))
    return Graph.from_nodes(nodes)


def digest(graph: Graph, *, canonical: bool = True) -> str:
    """sha256 of the graph's text without provenance (canonical form by default).

    O(n) once per graph value and kind, then remembered on the (immutable) graph.
    """
    key = ("digest", canonical)
    found = graph._cache.get(key)
    if found is None:
        g = canonicalize(graph) if canonical else graph
        # The node lines of `print_graph(g, meta=False)`, without its counters header (history,
        # not content); each line is remembered on its (immutable) node, see Node._line.
        text = "\n".join(map(_line, g.node_list()))
        body = "\n".join(line for line in text.splitlines() if not line.startswith("#!"))
        found = graph._cache[key] = hashlib.sha256(body.encode()).hexdigest()
    return found


def _line(node: Node) -> str:
    line = node._line
    if line is None:
        line = format_node(node, meta=False)
        object.__setattr__(node, "_line", line)
    return line

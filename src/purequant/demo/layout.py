"""A layered drawing of a graph as SVG, computed here (no graphviz, no JavaScript layout).

Layers: a node sits one layer below its deepest input; constants (`get_attr`) sit one layer
above their first user, to its left, instead of at the top. Within a layer nodes go to the mean
x of their inputs, pushed apart so boxes never overlap. Edges between adjacent layers are
vertical curves; longer edges drop into the gap below their source, run down a lane right of
every row they pass and come back in the gap above their target, so they never cross a box.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from attrs import frozen

from ..ir import Graph

NODE_W, NODE_H = 200, 38
GAP_X, PITCH_Y = 26, 70
MARGIN, LANE = 20, 12


@frozen
class Layout:
    """Box centres by node id, the canvas size, and each edge as an SVG path."""

    centres: Mapping[str, tuple[float, float]]
    width: float
    height: float
    edges: tuple[tuple[str, str, str], ...]


def layers(graph: Graph) -> dict[str, int]:
    """node id -> layer (0 at the top), nodes in graph (topological) order."""
    const = {n.id for n in graph if n.op == "get_attr"}
    layer: dict[str, int] = {}
    for node in graph:
        if node.id in const:
            continue
        deps = [layer[i] for i in node.input_ids() if i not in const]
        layer[node.id] = 1 + max(deps, default=0) if node.op != "placeholder" else 0
    for nid in const:
        users = [layer[u] for u in graph.users(nid) if u in layer]
        layer[nid] = max(0, min(users, default=1) - 1)
    return layer


def layout(graph: Graph) -> Layout:
    """Place every node and route every edge. O(nodes + edges) plus a sort per layer."""
    layer = layers(graph)
    const = {n.id for n in graph if n.op == "get_attr"}
    rows: dict[int, list[str]] = {}
    for node in graph:
        if node.id not in const:
            rows.setdefault(layer[node.id], []).append(node.id)
    xs: dict[str, float] = {}
    for depth in sorted(rows):
        _place_row(graph, rows[depth], xs, const)
    for nid in (n.id for n in graph if n.id in const):
        _place_constant(graph, nid, rows.setdefault(layer[nid], []), xs)
    shift = MARGIN + NODE_W / 2 - min(xs.values(), default=0.0)
    centres = {nid: (xs[nid] + shift, MARGIN + NODE_H / 2 + layer[nid] * PITCH_Y) for nid in xs}
    width = max((x for x, _ in centres.values()), default=0.0) + NODE_W / 2 + MARGIN
    edges, lanes_right = _route(graph, centres, layer, rows)
    height = MARGIN * 2 + NODE_H + max(rows, default=0) * PITCH_Y
    return Layout(centres, max(width, lanes_right + MARGIN), height, edges)


def _place_row(graph: Graph, row: list[str], xs: dict[str, float], const: set[str]) -> None:
    """x of each node in `row`: mean x of its inputs, then spread to avoid overlaps."""
    want = {}
    for pos, nid in enumerate(row):
        ins = [xs[i] for i in graph.node(nid).input_ids() if i in xs and i not in const]
        want[nid] = sum(ins) / len(ins) if ins else pos * (NODE_W + GAP_X)
    order = sorted(row, key=lambda n: (want[n], graph.position(n)))
    step = NODE_W + GAP_X
    placed: list[float] = []
    for nid in order:
        x = want[nid] if not placed else max(want[nid], placed[-1] + step)
        placed.append(x)
    drift = (sum(placed) - sum(want[n] for n in order)) / len(order)
    for nid, x in zip(order, placed):
        xs[nid] = x - drift


def _place_constant(graph: Graph, nid: str, row: list[str], xs: dict[str, float]) -> None:
    """A constant goes left of its first user, one row up, further left while that is taken."""
    users = [xs[u] for u in graph.users(nid) if u in xs]
    step = NODE_W + GAP_X
    x = (users[0] if users else 0.0) - step
    while any(abs(x - xs[other]) < step for other in row):
        x -= step
    row.append(nid)
    xs[nid] = x


def _route(graph: Graph, centres, layer, rows) -> tuple[tuple[tuple[str, str, str], ...], float]:
    """An SVG path per edge; long edges get a lane right of the rows they pass."""
    edges = []
    lanes_right = 0.0
    lane_ends: list[tuple[float, int]] = []  # (x, last layer) of lanes in use, to stack them
    for node in graph:
        for src in node.input_ids():
            (x1, y1), (x2, y2) = centres[src], centres[node.id]
            top, bottom = y1 + NODE_H / 2, y2 - NODE_H / 2
            if layer[node.id] - layer[src] <= 1:
                edges.append((src, node.id, _curve(x1, top, x2, bottom)))
                continue
            passed = [centres[n][0] for d in range(layer[src] + 1, layer[node.id]) for n in rows.get(d, ())]
            lane = max([*passed, x1, x2]) + NODE_W / 2 + LANE
            busy = [x for x, end in lane_ends if end > layer[src] and x >= lane]
            lane = max([lane, *[x + LANE for x in busy]])
            lane_ends.append((lane, layer[node.id]))
            lanes_right = max(lanes_right, lane)
            gap = (PITCH_Y - NODE_H) / 2
            edges.append((src, node.id, _lane(x1, top, top + gap, lane, bottom - gap, x2, bottom)))
    return tuple(edges), lanes_right


def _curve(x1: float, y1: float, x2: float, y2: float) -> str:
    mid = (y1 + y2) / 2
    return f"M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}"


def _lane(x1: float, y1: float, g1: float, lane: float, g2: float, x2: float, y2: float) -> str:
    """Down into the gap below the source, right to the lane, down, left above the target, in."""
    r = 6.0
    return (f"M{x1:.1f},{y1:.1f} V{g1 - r:.1f} Q{x1:.1f},{g1:.1f} {x1 + r:.1f},{g1:.1f} "
            f"H{lane - r:.1f} Q{lane:.1f},{g1:.1f} {lane:.1f},{g1 + r:.1f} V{g2 - r:.1f} "
            f"Q{lane:.1f},{g2:.1f} {lane - r:.1f},{g2:.1f} H{x2 + r:.1f} "
            f"Q{x2:.1f},{g2:.1f} {x2:.1f},{g2 + r:.1f} V{y2:.1f}")


def render_svg(graph: Graph, lay: Layout, kinds: Mapping[str, str],
               labels: Mapping[str, tuple[str, str]], *, svg_id: str) -> str:
    """The SVG markup: edges first, then a `<g class="node kind-...">` per node.

    Args:
        kinds: node id -> css kind (quantized, observer, float, io).
        labels: node id -> (title line, subtitle line).
        svg_id: the element id (the page has one SVG per view).
    """
    out = [f'<svg id="{svg_id}" class="graph" xmlns="http://www.w3.org/2000/svg" '
           f'width="{lay.width:.0f}" height="{lay.height:.0f}" viewBox="0 0 {lay.width:.0f} {lay.height:.0f}">',
           f'<defs><marker id="{svg_id}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
           'markerHeight="8" markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrow"/></marker></defs>']
    for src, dst, path in lay.edges:
        out.append(f'<path class="edge" data-src="{escape(src)}" data-dst="{escape(dst)}" d="{path}" '
                   f'marker-end="url(#{svg_id}-arrow)"/>')
    for node in graph:
        x, y = lay.centres[node.id]
        title, sub = labels[node.id]
        out.append(
            f'<g class="node kind-{kinds[node.id]}" data-id="{escape(node.id)}" data-op="{node.op}" tabindex="0" '
            f'transform="translate({x - NODE_W / 2:.1f},{y - NODE_H / 2:.1f})">'
            f'<title>%{escape(node.id)} = {escape(node.op)} {escape(node.target)}</title>'
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="7"/>'
            f'<text x="10" y="16" class="nid">{escape(_fit(title, 27))}</text>'
            f'<text x="10" y="30" class="sub">{escape(_fit(sub, 29))}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def _fit(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"

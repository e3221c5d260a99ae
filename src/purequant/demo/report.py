"""The HTML report: one self-contained file (inline CSS, SVG and script; no network).

Sections: the results table; the graph drawn as SVG (observed and quantized views, coloured by
node kind, a click shows the node's decision log); the decision log of every node; and each
stage with its time, what it changed, its record and its graph before and after.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path

from ..convert_api import Quantized
from .assets import CSS, JS
from .layout import layout, render_svg
from .stages import StageView
from .table import Results, ms, rows
from .views import KINDS, GraphView, vanished_nodes

REPORT_FILE = "report.html"


def write_report(folder: Path, results: Results, q: Quantized, views: Sequence[GraphView],
                 stages: Sequence[StageView]) -> Path:
    """Write `folder/report.html` (creating the folder); return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPORT_FILE
    path.write_text(render_report(results, q, views, stages), encoding="utf-8")
    return path


def render_report(results: Results, q: Quantized, views: Sequence[GraphView],
                  stages: Sequence[StageView]) -> str:
    title = f"purequant demo: {results.model}, {results.mode} ({results.backend})"
    explain = {v.key: v.explain for v in views}
    data = json.dumps(explain, sort_keys=True).replace("</", "<\\/")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{escape(title)}</h1><p>prepare → calibrate → convert through "
        f"{len(stages)} pure stages; every number and graph below comes from the run's records.</p></header>",
        "<main>", _metrics(results), _graphs(views), _decision_log(q, views[0]),
        _stages(stages), "</main>",
        f'<script type="application/json" id="explain-data">{data}</script>',
        f"<script>{JS}</script></body></html>",
    ])


def _metrics(results: Results) -> str:
    body = []
    for name, f, qv, note in rows(results):
        if name == "time per stage":
            break
        body.append(f"<tr><td>{escape(name)}</td><td>{escape(f)}</td><td>{escape(qv)}</td>"
                    f'<td class="note">{escape(note)}</td></tr>')
    metrics = ('<table class="metrics"><thead><tr><th>metric</th><th>float</th>'
               f"<th>{escape(results.qname)}</th><th></th></tr></thead><tbody>{''.join(body)}</tbody></table>")
    return (f'<section id="results"><h2>Results</h2><div class="results">{metrics}'
            f"{_stage_times(results)}</div></section>")


def _stage_times(results: Results) -> str:
    longest = max((s for _, s in results.stages), default=0.0) or 1.0
    body = [f'<tr><td><a href="#stage-{i}-{escape(name)}">{escape(name)}</a></td><td>{escape(ms(s))}</td>'
            f'<td class="bar"><span style="width:{100 * s / longest:.1f}%"></span></td></tr>'
            for i, (name, s) in enumerate(results.stages)]
    total = sum(s for _, s in results.stages)
    return ('<table class="metrics times"><thead><tr><th>time per stage</th><th>ms</th><th></th></tr>'
            f"</thead><tbody>{''.join(body)}<tr class=\"total\"><td>total</td><td>{escape(ms(total))}</td>"
            "<td></td></tr></tbody></table>")


def _graphs(views: Sequence[GraphView]) -> str:
    active = ' class="active"'
    tabs = "".join(
        f'<button type="button" data-view="{v.key}"{active if i == 0 else ""}>'
        f"{escape(v.title)} · {len(v.graph)} nodes</button>" for i, v in enumerate(views))
    legend = "".join(f'<span style="--c:var(--{k})">{escape(text)}</span>' for k, text in KINDS.items())
    drawn = []
    for i, v in enumerate(views):
        svg = render_svg(v.graph, layout(v.graph), v.kinds, v.labels, svg_id=f"svg-{v.key}")
        drawn.append(f'<div class="view" data-view="{v.key}"{" hidden" if i else ""}>'
                     f'<div class="canvas">{svg}</div></div>')
    panel = ('<aside class="panel" id="panel"><h3>decision log</h3><p class="hint">Click a node '
             "to see why it was or was not quantized (hover for its line).</p><pre></pre></aside>")
    caption = ('<p class="muted">Click a node for its decision log: the qconfig it got, the pattern '
               "that matched it, its observers and how it was lowered. Switch views with the tabs.</p>")
    return (f'<section id="graph"><h2>Graph</h2><div class="tabs">{tabs}</div>'
            f'{caption}<div class="legend">{legend}</div><div class="graph-area"><div>{"".join(drawn)}</div>'
            f"{panel}</div></section>")


def _decision_log(q: Quantized, observed: GraphView) -> str:
    items = [f"<h4>%{escape(nid)} <span class=\"badge\">{observed.kinds[nid]}</span></h4>"
             f"<pre>{escape(text)}</pre>" for nid, text in observed.explain.items()]
    for nid in vanished_nodes(q):
        items.append(f"<h4>%{escape(nid)} <span class=\"badge\">fused away</span></h4>"
                     f"<pre>{escape(q.prepared.explain(nid))}</pre>")
    return ('<section id="decisions"><h2>Decision log</h2><details><summary>every node of the '
            f"observed graph, and the traced nodes fusion folded away ({len(items)})</summary>"
            f'<div class="log">{"".join(items)}</div></details></section>')


def _stages(stages: Sequence[StageView]) -> str:
    parts = [_stage(s) for s in stages]
    total = sum(s.seconds for s in stages)
    return (f'<section id="stages"><h2>Stages <span class="muted">({len(stages)} stages, '
            f"{total * 1e3:.1f} ms in all)</span></h2>" + "".join(parts) + "</section>")


def _stage(s: StageView) -> str:
    if s.changed:
        badge = (f'<span class="badge changed">graph changed: +{len(s.added)} −{len(s.removed)} '
                 f"~{len(s.modified)} nodes</span>")
    else:
        badge = '<span class="badge">graph unchanged (the stage returned only a record)</span>'
    body = [f"<p>{escape(s.summary)}</p>"]
    if s.changed:
        body.append(_diff(s))
    body.append(f"<details><summary>record</summary><div><pre>{escape(s.record)}</pre></div></details>")
    body.append(_graph_text("graph before", s.before))
    if s.changed:
        body.append(_graph_text("graph after", s.after))
    return (f'<details class="stage" id="stage-{s.index}-{escape(s.name)}" data-stage="{escape(s.name)}">'
            f'<summary><span class="phase {s.phase}">{s.phase}</span><b>{s.index}. {escape(s.name)}</b><span class="time">{s.seconds * 1e3:.2f} ms</span>'
            f"{badge}</summary><div>{''.join(body)}</div></details>")


def _diff(s: StageView) -> str:
    if s.before is None or s.after is None:
        return '<p class="muted">(the graphs of this stage were not kept by the run)</p>'
    lines = [f'<div class="add">+ {escape(x)}</div>' for x in s.added]
    lines += [f'<div class="del">− {escape(x)}</div>' for x in s.removed]
    for old, new in s.modified:
        lines.append(f'<div class="mod">~ {escape(old)}</div><div class="mod">→ {escape(new)}</div>')
    return f'<pre class="diff">{"".join(lines)}</pre>'


def _graph_text(label: str, text: str | None) -> str:
    shown = escape(text) if text is not None else "(not kept by the run)"
    return f"<details><summary>{label}</summary><div><pre>{shown}</pre></div></details>"

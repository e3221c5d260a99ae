"""The report's inline stylesheet and script (no external assets: the page works offline)."""

CSS = """
:root { --ink:#1d2433; --muted:#5b6476; --line:#d8dde6; --bg:#f6f7fb; --card:#fff;
  --quantized:#2a9d8f; --observer:#e9a23b; --qdq:#8e6cc8; --float:#8d99ae; --io:#33415c; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--bg); }
header { padding:18px 28px 10px; background:#1d2433; color:#fff; }
header h1 { margin:0 0 4px; font-size:21px; font-weight:600; }
header p { margin:0; color:#c9d1e0; }
main { padding:16px 28px 40px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 18px; margin:0 0 16px; }
h2 { font-size:16px; margin:0 0 10px; }
table.metrics { border-collapse:collapse; }
.results { display:flex; gap:48px; flex-wrap:wrap; align-items:flex-start; }
table.times td.bar { width:160px; }
table.times td.bar span { display:block; height:10px; border-radius:3px; background:var(--quantized); min-width:2px; }
table.times a { color:var(--ink); text-decoration:none; border-bottom:1px dotted var(--muted); }
table.times tr.total td { border-top:1px solid var(--line); font-weight:600; }
table.metrics th, table.metrics td { padding:4px 14px 4px 0; text-align:right; white-space:nowrap; }
table.metrics th:first-child, table.metrics td:first-child { text-align:left; }
table.metrics td.note { text-align:left; color:var(--muted); }
table.metrics thead th { border-bottom:2px solid var(--line); }
.tabs { display:flex; gap:6px; margin-bottom:10px; flex-wrap:wrap; align-items:center; }
.tabs button { font:inherit; border:1px solid var(--line); background:#eef1f6; padding:5px 12px; border-radius:6px; cursor:pointer; }
.tabs button.active { background:var(--ink); color:#fff; border-color:var(--ink); }
.legend { display:flex; gap:14px; flex-wrap:wrap; margin:0 0 10px; color:var(--muted); font-size:13px; }
.legend span::before { content:""; display:inline-block; width:12px; height:12px; border-radius:3px; margin-right:5px; vertical-align:-1px; background:var(--c); }
.graph-area { display:flex; gap:16px; align-items:flex-start; }
.graph-area > div { flex:0 1 auto; min-width:0; max-width:68%; }
.canvas { overflow:auto; max-height:78vh; border:1px solid var(--line); border-radius:8px; background:#fbfcfe; }
.panel { flex:1 1 380px; min-width:340px; position:sticky; top:10px; align-self:start; border:1px solid var(--line); border-radius:8px; padding:10px 12px; background:#fbfcfe; max-height:78vh; overflow:auto; }
.panel h3 { margin:0 0 6px; font-size:14px; word-break:break-all; }
.panel .hint { color:var(--muted); }
pre { margin:0; font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; white-space:pre-wrap; word-break:break-word; }
svg.graph .edge { fill:none; stroke:#9aa5b8; stroke-width:1.4; }
svg.graph .edge.hot { stroke:var(--ink); stroke-width:2.4; }
svg.graph .arrow { fill:#9aa5b8; }
svg.graph .node { cursor:pointer; }
svg.graph .node rect { stroke-width:1.5; }
svg.graph .node text { font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; fill:var(--ink); }
svg.graph .node text.nid { font-weight:600; }
svg.graph .node text.sub { fill:var(--muted); font-size:11px; }
svg.graph .node:hover rect, svg.graph .node:focus rect { stroke-width:3; }
svg.graph .node.selected rect { stroke:var(--ink); stroke-width:3.2; }
.kind-quantized rect { fill:#d9f2ef; stroke:var(--quantized); }
.kind-observer rect { fill:#fcebd0; stroke:var(--observer); }
.kind-qdq rect { fill:#ebe3f7; stroke:var(--qdq); }
.kind-float rect { fill:#eceff4; stroke:var(--float); stroke-dasharray:5 3; }
.kind-io rect { fill:#fff; stroke:var(--io); }
.view[hidden] { display:none; }
details { border:1px solid var(--line); border-radius:8px; margin:0 0 8px; background:#fbfcfe; }
details > summary { cursor:pointer; padding:8px 12px; list-style:revert; }
details > div { padding:2px 14px 12px; }
details details { margin-top:8px; }
.stage > summary b { display:inline-block; min-width:190px; }
.phase { display:inline-block; width:64px; font-size:11px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
.phase.convert { color:#6a4bb0; }
.time { display:inline-block; min-width:80px; color:var(--muted); text-align:right; margin-right:14px; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; background:#eef1f6; color:var(--muted); }
.badge.changed { background:#d9f2ef; color:#1d6d63; }
.diff .add { color:#1d6d3a; background:#e6f6ea; }
.diff .del { color:#9b1c1c; background:#fbe9e9; }
.diff .mod { color:#7a4d00; background:#fdf3dc; }
.diff div { padding:0 4px; }
.muted { color:var(--muted); }
.log h4 { margin:10px 0 3px; font-size:13px; }
@media (max-width:1100px) { .graph-area { flex-direction:column; } .graph-area > div { max-width:100%; } .panel { position:static; } }
"""

JS = """
(function () {
  const explain = JSON.parse(document.getElementById('explain-data').textContent);
  const panel = document.getElementById('panel');
  function select(view, g) {
    document.querySelectorAll('svg.graph .selected').forEach(e => e.classList.remove('selected'));
    document.querySelectorAll('svg.graph .hot').forEach(e => e.classList.remove('hot'));
    g.classList.add('selected');
    const id = g.dataset.id, svg = g.ownerSVGElement;
    svg.querySelectorAll('.edge').forEach(e => {
      if (e.dataset.src === id || e.dataset.dst === id) e.classList.add('hot');
    });
    panel.querySelector('h3').textContent = '%' + id + '  (' + view + ')';
    panel.querySelector('pre').textContent = explain[view][id] || '(no record mentions this node)';
    panel.querySelector('.hint').hidden = true;
  }
  document.querySelectorAll('.view').forEach(v => {
    v.querySelectorAll('.node').forEach(g => {
      g.addEventListener('click', () => select(v.dataset.view, g));
      g.addEventListener('keydown', e => { if (e.key === 'Enter') select(v.dataset.view, g); });
    });
  });
  function selectFirst() {
    const view = document.querySelector('.view:not([hidden])');
    const first = view && view.querySelector('.node.kind-quantized:not([data-op="get_attr"])');
    if (first) select(view.dataset.view, first);
  }
  document.querySelectorAll('.tabs button').forEach(b => b.addEventListener('click', () => {
    document.querySelectorAll('.tabs button').forEach(x => x.classList.toggle('active', x === b));
    document.querySelectorAll('.view').forEach(v => { v.hidden = v.dataset.view !== b.dataset.view; });
    selectFirst();
  }));
  selectFirst();
  function openTarget() {
    const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target && target.tagName === 'DETAILS') target.open = true;
  }
  window.addEventListener('hashchange', openTarget);
  openTarget();
  document.body.dataset.ready = 'yes';
})();
"""

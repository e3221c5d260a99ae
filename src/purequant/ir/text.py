"""The text format: one node per line, printed and parsed so that they round-trip exactly.

    %x = placeholder x()
    %conv1 = call_module conv1(%x)  # scope='conv1', type='torch.nn.Conv2d'
    %add = call_function operator.add(%conv1, %x)
    %output = output output(%add)

Values: `%id` is an edge, `@torch.float32` a named constant, Python literal syntax for the rest
(tuples, `[lists]`, `{dicts}`, `slice(a, b, c)`, `...`, `nan`, `inf`). The trailing comment holds
the node's provenance (meta). A first line `#! ids: base=N, ...` carries id counters where a
graph's history made them differ from what its nodes imply, so parsing gives back a graph that
hands out the same fresh ids.
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
from typing import Any

from pyrsistent import PMap, PVector, pmap, pvector

from ..errors import GraphError
from .builder import GraphBuilder
from .gcpause import paused_gc
from .graph import Graph
from .names import derive_counters
from .node import Node, Ref, Slice, Sym

_PLAIN_TARGET = re.compile(r"[\w.]+\Z")
# Every dotted part must tokenize as one NAME: `@a.1` would read as `@a` then the number `.1`,
# and a non-ASCII `\w` may not be an identifier character at all. Anything else is quoted.
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_LINE = re.compile(r"%(\w+) = (\w+) ")
_HEADER = "#! ids: "


# ------------------------------------------------------------------ printing
def format_value(v: Any) -> str:
    """One argument value in the text syntax."""
    t = type(v)
    if t is Ref:
        return "%" + v.id
    if v is None or t is bool or t is int or t is str:
        return repr(v)
    if t is float:
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if t is Sym:
        return "@" + (v.name if _DOTTED.match(v.name) else repr(v.name))
    if v is Ellipsis:
        return "..."
    if t is tuple:
        inner = ", ".join(format_value(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, PVector):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, PMap):
        items = sorted(v.items(), key=lambda kv: repr(kv[0]))
        return "{" + ", ".join(f"{format_value(k)}: {format_value(x)}" for k, x in items) + "}"
    if t is Slice:
        return f"slice({format_value(v.start)}, {format_value(v.stop)}, {format_value(v.step)})"
    raise GraphError(f"value {v!r} of type {t.__name__} cannot appear in a graph")


def format_node(node: Node, *, meta: bool = True) -> str:
    """One node as a line of the text format."""
    target = node.target if _PLAIN_TARGET.match(node.target) else repr(node.target)
    items = [format_value(a) for a in node.args]
    if node.kwargs:  # most nodes have none; sorting an empty PMap still walks its buckets
        items += [f"{k}={format_value(node.kwargs[k])}" for k in sorted(node.kwargs)]
    line = f"%{node.id} = {node.op} {target}({', '.join(items)})"
    if meta and node.meta:
        line += "  # " + ", ".join(f"{k}={format_value(node.meta[k])}" for k in sorted(node.meta))
    return line


def print_graph(graph: Graph, *, meta: bool = True) -> str:
    """The whole graph as text, one node per line, ending with a newline. O(n)."""
    lines = [format_node(n, meta=meta) for n in graph.node_list()]
    derived = derive_counters(graph.ids())
    extra = {b: k for b, k in graph.counters.items() if derived.get(b, -1) != k}
    if extra:
        lines.insert(0, _HEADER + ", ".join(f"{b}={k}" for b, k in sorted(extra.items())))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- parsing
class _Tokens:
    def __init__(self, text: str) -> None:
        skip = (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT)
        self.toks = [t for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type not in skip]
        self.i = 0

    def peek(self) -> tokenize.TokenInfo | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, string: str | None = None) -> tokenize.TokenInfo:
        tok = self.peek()
        if tok is None or (string is not None and tok.string != string):
            found = "end of line" if tok is None else repr(tok.string)
            raise ValueError(f"expected {string or 'a value'!r}, found {found}")
        self.i += 1
        return tok

    def at(self, string: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.string == string and tok.type in (tokenize.OP, tokenize.NAME)


_NAMES = {"None": None, "True": True, "False": False, "nan": math.nan, "inf": math.inf}
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def _value(ts: _Tokens) -> Any:
    tok = ts.take()
    s = tok.string
    if s == "%":
        return Ref(ts.take().string)
    if s == "@":
        nxt = ts.take()
        if nxt.type == tokenize.STRING:
            return Sym(ast.literal_eval(nxt.string))
        name = nxt.string
        while ts.at("."):
            ts.take(".")
            name += "." + ts.take().string
        return Sym(name)
    if tok.type == tokenize.NUMBER or tok.type == tokenize.STRING:
        return ast.literal_eval(s)
    if s == "-":
        v = _value(ts)
        if type(v) not in (int, float):
            raise ValueError("'-' must precede a number")
        return -v
    if s == "...":
        return Ellipsis
    if tok.type == tokenize.NAME and s in _NAMES:
        return _NAMES[s]
    if s == "slice":
        a = _items(ts, "(")
        return Slice(*a)
    if s in _CLOSE:
        ts.i -= 1
        return _container(ts, s)
    raise ValueError(f"unexpected {s!r}")


def _items(ts: _Tokens, opener: str) -> list:
    ts.take(opener)
    out, close = [], _CLOSE[opener]
    while not ts.at(close):
        out.append(_value(ts))
        if not ts.at(close):
            ts.take(",")
    ts.take(close)
    return out


def _container(ts: _Tokens, opener: str) -> Any:
    if opener == "(":
        return tuple(_items(ts, "("))
    if opener == "[":
        return pvector(_items(ts, "["))
    ts.take("{")
    out = {}
    while not ts.at("}"):
        k = _value(ts)
        ts.take(":")
        out[k] = _value(ts)
        if not ts.at("}"):
            ts.take(",")
    ts.take("}")
    return pmap(out)


def _call(ts: _Tokens) -> tuple[tuple, dict]:
    """`(a, b, k=v)` -> (args, kwargs)."""
    ts.take("(")
    args, kwargs = [], {}
    while not ts.at(")"):
        tok = ts.take()
        ts.i -= 1  # peek, but with "end of line" reported by take() when there is nothing
        nxt = ts.toks[ts.i + 1] if ts.i + 1 < len(ts.toks) else None
        if tok.type == tokenize.NAME and nxt is not None and nxt.string == "=":
            ts.i += 2
            kwargs[tok.string] = _value(ts)
        else:
            args.append(_value(ts))
        if not ts.at(")"):
            ts.take(",")
    ts.take(")")
    return tuple(args), kwargs


def parse_node(line: str) -> Node:
    """Parse one line of the text format into a Node."""
    m = _LINE.match(line)
    if not m:
        raise ValueError("expected '%id = op target(args)'")
    ts = _Tokens(line[m.end():])
    tok = ts.take()
    if tok.type == tokenize.STRING:
        target = ast.literal_eval(tok.string)
    else:
        target = tok.string
        while not ts.at("("):
            target += ts.take().string
    args, kwargs = _call(ts)
    meta: dict = {}
    tail = ts.peek()
    if tail is not None:
        if tail.type != tokenize.COMMENT:
            raise ValueError(f"unexpected {tail.string!r} after the arguments")
        ts.take()
        margs, meta = _call(_Tokens("(" + tail.string[1:].strip() + ")"))
        if margs:
            raise ValueError("provenance comment holds only key=value pairs")
    return Node(m.group(1), m.group(2), target, args, pmap(kwargs), pmap(meta))


def parse_graph(text: str) -> Graph:
    """Parse the text format back into a Graph (exact inverse of print_graph). O(n)."""
    with paused_gc():
        return _parse_graph(text)


def _parse_graph(text: str) -> Graph:
    counters: dict[str, int] = {}
    b = GraphBuilder()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith(_HEADER):
            for item in line[len(_HEADER):].split(","):
                base, _, k = item.strip().partition("=")
                counters[base] = int(k)
            continue
        try:
            node = parse_node(line)
        except (ValueError, SyntaxError, tokenize.TokenError) as e:
            raise GraphError(f"line {lineno}: {e}\n  {line}") from None
        b.add(node)
    g = b.finish()
    if counters:
        g = g._evolve(counters=g.counters.update(counters))
    return g

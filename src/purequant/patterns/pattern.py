"""Sequence patterns in torch.ao 1.7's reverse-nested form, and the structural matcher.

A `Pat` is an op and patterns for the node's leading positional arguments, so the pattern for
`relu(bn(conv(x)))` is written from its output back: `Pat(relu, (Pat(bn, (Pat(conv),)),))`,
printed `relu <- bn <- conv`. `seq(conv, bn, relu)` builds it from the forward order. `ANY`
matches any argument and takes no part in the match (torch.ao's `MatchAllNode`), so
`Pat(add, (Pat(conv), ANY))` is "an add whose first input is a conv".

Matching rules (1.7's `is_match`, with two deliberate differences noted):
* the root node may have any number of users; every other matched node must have exactly one
  user, so no value computed inside a fused pattern escapes it;
* a sub-pattern matches the node a positional argument refers to; a non-node argument only
  matches ANY;
* a node must have at least as many positional arguments as the pattern lists (1.7 required
  exactly as many, which made `F.relu(x, True)` unmatchable);
* a node is matched at most once per match (`add(conv, conv)` on `add(c, c)` fails).

The *anchor* of a pattern is its input op: the node its weights and bias belong to (`conv` in
`relu <- bn <- conv`). It is found by following the last non-ANY argument, torch.ao's default
root-node getter, which also gives the conv of onednn's `add(*, bn <- conv)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from attrs import frozen

from ..ir import ModuleSpec, Node, Ref
from .op import Op


class GraphLike(Protocol):
    """What matching reads of a graph: a `purequant.ir.Graph`, or a view with plain dicts."""

    @property
    def nodes(self) -> Mapping[str, Node]: ...
    @property
    def users_map(self) -> Mapping[str, tuple[str, ...]]: ...
    @property
    def pos(self) -> Mapping[str, int]: ...


@frozen
class Pat:
    """A node pattern: `op` (None for the ANY wildcard) and patterns for its leading args."""

    op: Op | None
    args: tuple[Pat, ...] = ()

    @property
    def is_any(self) -> bool:
        return self.op is None

    def size(self) -> int:
        """Number of nodes a match of this pattern covers."""
        return 0 if self.op is None else 1 + sum(a.size() for a in self.args)

    def __str__(self) -> str:
        if self.op is None:
            return "*"
        head = str(self.op)
        real = [a for a in self.args if not a.is_any]
        if not real:
            return head
        if len(self.args) == 1:
            return f"{head} <- {self.args[0]}"
        return f"{head}({', '.join(str(a) for a in self.args)})"


ANY = Pat(None)


def seq(*ops: Op | Pat) -> Pat:
    """The pattern of a chain given in forward order: `seq(conv, bn, relu)` is relu <- bn <- conv.

    Each element is an Op or an already built Pat (used as is for that step's node).
    """
    if not ops:
        raise ValueError("seq() needs at least one op")
    pat: Pat | None = None
    for step in ops:
        if isinstance(step, Pat):
            if pat is not None:
                raise ValueError("only the first element of seq() may be a Pat")
            pat = step
        else:
            pat = Pat(step, () if pat is None else (pat,))
    assert pat is not None
    return pat


def match_at(
    pat: Pat, graph: GraphLike, modules: Mapping[str, ModuleSpec], nid: str
) -> tuple[tuple[str, ...], str] | None:
    """Match `pat` rooted at node `nid`.

    `graph` is a Graph, or any object with the same `nodes`, `users_map` and `pos` mappings
    (stages pass plain-dict views for speed). Returns (matched ids in graph order, anchor id),
    or None. O(size of the pattern) lookups.
    """
    out: list[str] = []
    anchor = _match(pat, graph, modules, nid, False, out)
    if anchor is None or len(set(out)) != len(out):
        return None
    pos = graph.pos
    return tuple(sorted(out, key=pos.__getitem__)), anchor


def _match(pat: Pat, graph: GraphLike, modules, nid: str, inner: bool, out: list[str]) -> str | None:
    """Match one level; appends matched ids to `out`, returns the anchor id or None."""
    node = graph.nodes[nid]
    if inner and len(graph.users_map[nid]) != 1:
        return None
    assert pat.op is not None
    if not pat.op.matches(node, modules) or len(node.args) < len(pat.args):
        return None
    anchor = nid
    for sub, arg in zip(pat.args, node.args):
        if sub.op is None:
            continue
        if type(arg) is not Ref:
            return None
        got = _match(sub, graph, modules, arg.id, True, out)
        if got is None:
            return None
        anchor = got  # the last non-ANY argument's anchor wins (torch.ao's root getter)
    out.append(nid)
    return anchor

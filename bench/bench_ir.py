"""IR cost model: build, lookup, users-of, local insert, erase, replace_all_uses and a full
rewriting sweep at 1k, 10k and 30k nodes, beside the same operations on torch.fx's mutable Graph
and on the rejected alternative order (a PVector rebuilt per insert).

Run: .venv/bin/python bench/bench_ir.py            (prints a markdown table)
"""

from __future__ import annotations

import random
import statistics
import time

import torch.fx as fx
from pyrsistent import pvector

from purequant.ir import Graph, GraphBuilder, Node, Ref, paused_gc

SIZES = (1_000, 10_000, 30_000)
REPS = 200  # local operations timed per size


def chain_nodes(n: int) -> list[Node]:
    """x -> add_1 -> ... -> add_{n-2} -> output, each add reading the previous value twice."""
    nodes = [Node("x", "placeholder", "x")]
    prev = "x"
    for i in range(1, n - 1):
        nid = f"add_{i}"
        nodes.append(Node(nid, "call_function", "operator.add", (Ref(prev), Ref("x"))))
        prev = nid
    nodes.append(Node("output", "output", "output", (Ref(prev),)))
    return nodes


def timed(fn, reps: int = 1) -> float:
    """Median seconds per call over 5 rounds of `reps` calls."""
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        rounds.append((time.perf_counter() - t0) / reps)
    return statistics.median(rounds)


def ours(n: int) -> dict[str, float]:
    nodes = chain_nodes(n)
    g = Graph.from_nodes(nodes)
    rng = random.Random(0)
    picks = [f"add_{rng.randrange(1, n - 2)}" for _ in range(REPS)]
    it = iter(picks * 10**6)

    def insert():
        a = next(it)
        g.insert_after(a, Node("obs", "call_function", "purequant.observe", (Ref(a),)))

    def insert_replace():
        a = next(it)
        g2 = g.insert_after(a, Node("obs", "call_function", "purequant.observe", (Ref(a),)))
        g2.replace_all_uses(a, "obs", skip=("obs",))

    leaf = g.insert_after("add_5", Node("dead", "call_function", "torch.relu", (Ref("add_5"),)))

    def sweep():
        with paused_gc():  # as the pipeline runner runs every stage
            b = GraphBuilder()
            for node in g.node_list():
                b.add(node)
                if node.op == "call_function":
                    b.add(
                        Node(
                            node.id + "_obs", "call_function", "purequant.observe", (Ref(node.id),)
                        )
                    )
            b.finish()

    return {
        "build": timed(lambda: Graph.from_nodes(nodes)),
        "lookup": timed(lambda: g.node(next(it)), REPS),
        "users-of": timed(lambda: g.users(next(it)), REPS),
        "local insert": timed(insert, REPS),
        "erase": timed(lambda: leaf.erase("dead"), REPS),
        "insert + replace_all_uses": timed(insert_replace, REPS),
        "full sweep (observer after every op)": timed(sweep),
    }


def fx_graph(n: int) -> dict[str, float]:
    def build():
        g = fx.Graph()
        x = g.placeholder("x")
        prev = x
        for _ in range(1, n - 1):
            prev = g.call_function(int.__add__, (prev, x))
        g.output(prev)
        return g

    g = build()
    nodes = list(g.nodes)
    rng = random.Random(0)

    def insert():
        a = nodes[rng.randrange(1, n - 2)]
        with g.inserting_after(a):
            new = g.call_function(int.__neg__, (a,))
        g.erase_node(new)

    return {"build": timed(build), "local insert": timed(insert, REPS)}


def pvector_order(n: int) -> float:
    order = pvector(f"add_{i}" for i in range(n))
    rng = random.Random(0)

    def insert():
        k = rng.randrange(n)
        # PVector has no insert: rebuilding the order is the cost this alternative pays.
        order[:k] + pvector(["obs"]) + order[k:]

    return timed(insert, 20)


def main() -> None:
    rows: dict[str, list[str]] = {}
    for n in SIZES:
        for k, v in ours(n).items():
            rows.setdefault(k, []).append(_fmt(v))
        fxr = fx_graph(n)
        rows.setdefault("torch.fx build (mutable, reference)", []).append(_fmt(fxr["build"]))
        rows.setdefault("torch.fx insert+erase (mutable, reference)", []).append(
            _fmt(fxr["local insert"])
        )
        rows.setdefault("rejected: PVector order, insert", []).append(_fmt(pvector_order(n)))
    print("| operation | " + " | ".join(f"{n:,} nodes" for n in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for k, vals in rows.items():
        print(f"| {k} | " + " | ".join(vals) + " |")


def _fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


if __name__ == "__main__":
    main()

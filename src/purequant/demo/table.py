"""The demo's results table: the same rows on the terminal and in the HTML report."""

from __future__ import annotations

import math

from attrs import frozen


@frozen
class Results:
    """What the demo measured.

    Attributes:
        model, mode, backend: what ran.
        accuracy: (float, quantized) on the held-out split, or None (zoo models: random data).
        n_eval: number of held-out images (or of random eval samples).
        size: bytes of parameters (float, quantized).
        latency: median seconds per batch-1 call (float, quantized), one thread.
        sqnr: SQNR of the quantized model's outputs against the float ones, in dB.
        stages: (stage name, seconds) in run order.
        train_seconds: time spent training (0 when nothing was trained).
    """

    model: str
    mode: str
    backend: str
    accuracy: tuple[float, float] | None
    n_eval: int
    size: tuple[int, int]
    latency: tuple[float, float]
    sqnr: float
    stages: tuple[tuple[str, float], ...]
    train_seconds: float = 0.0

    @property
    def qname(self) -> str:
        return {"static": "int8", "dynamic": "int8 dyn", "fp16": "fp16"}.get(self.mode, self.mode)


Row = tuple[str, str, str, str]


def rows(r: Results) -> list[Row]:
    """(metric, float, quantized, note) rows; stage rows are indented under 'time per stage'."""
    out: list[Row] = []
    if r.accuracy is not None:
        f, q = r.accuracy
        out.append((f"accuracy ({r.n_eval} held-out)", f"{100 * f:.2f} %", f"{100 * q:.2f} %",
                    f"{100 * (q - f):+.2f} points"))
    fs, qs = r.size
    out.append(("model size (params)", kib(fs), kib(qs), f"{fs / max(qs, 1):.1f}x smaller" if qs < fs else ""))
    fl, ql = r.latency
    speed = f"{fl / ql:.2f}x faster" if fl >= ql else f"{ql / fl:.2f}x slower"
    out.append(("latency (batch 1, 1 thread)", ms(fl), ms(ql), speed))
    note = "outputs on held-out images" if r.accuracy is not None else f"outputs on {r.n_eval} random samples"
    out.append(("SQNR of logits", "", db(r.sqnr), note))
    out.append(("time per stage", "", "", ""))
    for name, seconds in r.stages:
        out.append((f"  {name}", "", ms(seconds), ""))
    out.append(("  total", "", ms(sum(s for _, s in r.stages)), ""))
    return out


def format_table(r: Results) -> str:
    """The rows as aligned plain text, with a title line."""
    header: Row = ("", "float", r.qname, "")
    body = [header, *rows(r)]
    widths = [max(len(row[i]) for row in body) for i in range(4)]
    lines = [f"purequant demo: {r.model}, {r.mode} ({r.backend})"]
    for i, row in enumerate(body):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]), row[3]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("-" * (sum(widths[:3]) + 4 + widths[3] + 2))
    return "\n".join(lines) + "\n"


def kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:,.2f} MiB"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def db(value: float) -> str:
    return "inf (identical)" if math.isinf(value) else f"{value:.1f} dB"

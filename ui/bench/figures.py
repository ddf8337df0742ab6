"""Plotly figures for BENCHMARKS.md from the bench and sweep JSON lines (not from the bench CLI).

    python -m ui.bench.figures --bench assets/bench/cpu-bench.jsonl \
        --sweep assets/bench/cpu-sweep.jsonl --out assets/bench

A sweep file from ``--strategies`` gives the figure of tau against M per way of choosing layers.
Figures are written as HTML, and also as PNG where kaleido is installed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from collections import defaultdict
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from clasp_core.bench.stats import pooled
from ui.views.palette import SERIES

SWEPT = ("M", "K", "DET", "LOI")


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def grouped(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    out = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def task_speed_figure(rows: list[dict]) -> go.Figure:
    """Tokens/s per Spec-Bench task and method."""
    groups = grouped(rows, "task", "method")
    tasks = list(dict.fromkeys(t for t, _ in groups))
    methods = list(dict.fromkeys(m for _, m in groups))
    fig = go.Figure([go.Bar(name=m, x=tasks, y=[pooled(groups[(t, m)]).tokens_per_s for t in tasks])
                     for m in methods])
    fig.update_layout(barmode="group", title="Tokens per second by task", yaxis_title="tokens/s",
                      template="plotly_white")
    return fig


def sweep_figure(rows: list[dict]) -> go.Figure:
    """tau and speedup vs vanilla for each parameter swept one at a time (one column each)."""
    van_rate = pooled([r for r in rows if r["param"] == "vanilla"]).tokens_per_s
    params = [p for p in dict.fromkeys(r["param"] for r in rows) if p in SWEPT]
    fig = make_subplots(rows=2, cols=len(params), subplot_titles=params, shared_yaxes="rows",
                        vertical_spacing=0.12)
    for c, p in enumerate(params, 1):
        groups = grouped([r for r in rows if r["param"] == p], "value")
        xs = sorted(v for v, in groups)
        stats = [pooled(groups[(x,)]) for x in xs]
        fig.add_trace(go.Scatter(x=xs, y=[s.tau for s in stats], mode="lines+markers", name="tau",
                                 line=dict(color=SERIES[0]), showlegend=c == 1), row=1, col=c)
        fig.add_trace(go.Scatter(x=xs, y=[s.tokens_per_s / van_rate for s in stats], mode="lines+markers",
                                 name="speedup vs vanilla", line=dict(color=SERIES[1]), showlegend=c == 1),
                      row=2, col=c)
    fig.update_yaxes(title_text="tau", row=1, col=1)
    fig.update_yaxes(title_text="x vanilla", row=2, col=1)
    fig.update_layout(title="Sweeps around the defaults", template="plotly_white", height=560)
    return fig


def strategy_tau_figure(rows: list[dict]) -> go.Figure:
    """tau against M / L, one line per way of choosing layers (the paper's Fig. 4a analogue)."""
    groups = grouped([r for r in rows if r["param"] == "M/L"], "method", "value")
    fig = go.Figure()
    for m in dict.fromkeys(m for m, _ in groups):
        xs = sorted(v for mm, v in groups if mm == m)
        stats = [pooled(groups[(m, x)]) for x in xs]
        fig.add_trace(go.Scatter(x=xs, y=[s.tau for s in stats], mode="lines+markers", name=m,
                                 customdata=[[groups[(m, x)][0]["M"], s.accept] for x, s in zip(xs, stats)],
                                 hovertemplate="M/L %{x} (M %{customdata[0]})<br>tau %{y:.2f}"
                                               "<br>accepted/drafted %{customdata[1]:.0%}<extra>" + m + "</extra>"))
    fig.update_layout(title="Tokens per round (tau) against the share of layers skipped", template="plotly_white",
                      xaxis_title="M / L (layers skipped)", yaxis_title="tau", legend_title="layer choice")
    return fig


def save(fig: go.Figure, path: Path) -> None:
    fig.write_html(path.with_suffix(".html"), include_plotlyjs="cdn")
    if importlib.util.find_spec("kaleido"):
        fig.write_image(path.with_suffix(".png"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench")
    ap.add_argument("--sweep", help="a sweep file (one at a time, or --strategies)")
    ap.add_argument("--out", default="assets/bench")
    ap.add_argument("--prefix", default="cpu")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.bench:
        save(task_speed_figure(read_jsonl(a.bench)), out / f"{a.prefix}-tasks")
    if a.sweep:
        rows = read_jsonl(a.sweep)
        if any(r["param"] in SWEPT for r in rows):
            save(sweep_figure(rows), out / f"{a.prefix}-sweeps")
        if any(r["param"] == "M/L" for r in rows):
            save(strategy_tau_figure(rows), out / f"{a.prefix}-tau-vs-m")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Plotly figures for BENCHMARKS.md from the bench and sweep JSON lines.

    python -m ui.bench_figures --bench assets/bench/cpu-bench.jsonl \
        --sweep assets/bench/cpu-sweep.jsonl --out assets/bench
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def task_speed_figure(rows: list[dict]) -> go.Figure:
    """Tokens/s per Spec-Bench task and method."""
    from clasp_core.bench import task_of

    tok, wall = defaultdict(float), defaultdict(float)
    for r in rows:
        key = (task_of(r["category"]), r["method"])
        tok[key] += r["new_tokens"]
        wall[key] += r["wall_s"]
    tasks = list(dict.fromkeys(k[0] for k in tok))
    methods = list(dict.fromkeys(k[1] for k in tok))
    fig = go.Figure([go.Bar(name=m, x=tasks, y=[tok[(t, m)] / wall[(t, m)] for t in tasks]) for m in methods])
    fig.update_layout(barmode="group", title="Tokens per second by task", yaxis_title="tokens/s",
                      template="plotly_white")
    return fig


def sweep_figure(rows: list[dict]) -> go.Figure:
    """tau and speedup vs vanilla for each swept parameter (one column each)."""
    van_tok = sum(r["new_tokens"] for r in rows if r["param"] == "vanilla")
    van_rate = van_tok / sum(r["wall_s"] for r in rows if r["param"] == "vanilla")
    params = [p for p in dict.fromkeys(r["param"] for r in rows) if p != "vanilla"]
    fig = make_subplots(rows=2, cols=len(params), subplot_titles=params, shared_yaxes="rows",
                        vertical_spacing=0.12)
    for c, p in enumerate(params, 1):
        agg = defaultdict(lambda: [0.0, 0, 0, 0])
        for r in rows:
            if r["param"] == p:
                a = agg[r["value"]]
                a[0] += r["wall_s"]
                a[1] += r["new_tokens"]
                a[2] += r["new_tokens"] - 1
                a[3] += r["rounds"]
        xs = sorted(agg)
        fig.add_trace(go.Scatter(x=xs, y=[agg[x][2] / max(1, agg[x][3]) for x in xs], mode="lines+markers",
                                 name="tau", line=dict(color="#4c72b0"), showlegend=c == 1), row=1, col=c)
        fig.add_trace(go.Scatter(x=xs, y=[agg[x][1] / agg[x][0] / van_rate for x in xs], mode="lines+markers",
                                 name="speedup vs vanilla", line=dict(color="#dd8452"), showlegend=c == 1),
                      row=2, col=c)
    fig.update_yaxes(title_text="tau", row=1, col=1)
    fig.update_yaxes(title_text="x vanilla", row=2, col=1)
    fig.update_layout(title="Sweeps around the defaults", template="plotly_white", height=560)
    return fig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench")
    ap.add_argument("--sweep")
    ap.add_argument("--out", default="assets/bench")
    ap.add_argument("--prefix", default="cpu")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.bench:
        task_speed_figure(read_jsonl(a.bench)).write_html(out / f"{a.prefix}-tasks.html", include_plotlyjs="cdn")
    if a.sweep:
        sweep_figure(read_jsonl(a.sweep)).write_html(out / f"{a.prefix}-sweeps.html", include_plotlyjs="cdn")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the knobs do to speed on this device: τ and speed against M, K, DET and LOI, read from the
bench's sweep shipped with the app (assets/bench/cpu-sweep.jsonl), the best value of each marked.

Each knob is swept alone around the defaults (the others held), on the bench's development
questions; the page says so, and which device and engine measured it, so nobody reads it as theirs.
"""
from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from clasp_core.bench.stats import pooled

from .palette import ACCEPTED, CURRENT, SKIPPED, styled

SWEEP = Path(__file__).resolve().parents[2] / "assets" / "bench" / "cpu-sweep.jsonl"
KNOBS = ("M", "K", "DET", "LOI")
HELP = (
    "**What the knobs do to speed.** Measured by the bench's sweep on the CPU of BENCHMARKS.md (float32, the default "
    "model, "
    "6 Spec-Bench questions, 64 tokens each), turning one knob at a time with the others at M 14, K 8, DET 0.7, "
    "LOI 1, auto off. Top: τ (tokens per round); bottom: speed against vanilla decoding. ★ marks the fastest "
    "value of each knob. On this CPU one run of the layer DP costs about 2.4 plain steps and a verification of 9 "
    "tokens about 2 (the shape study in BENCHMARKS.md), so LOI (how rarely the DP runs) matters most and K barely "
    "matters; on a GPU the same sweep comes out differently "
    "(`python -m clasp_core.bench.sweep` measures yours).")


def read_sweep(path: Path = SWEEP) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sweep_points(rows: list[dict]) -> dict[str, list[tuple[float, float, float]]]:
    """{knob: [(value, τ, × vanilla)]} pooled over the questions, values in order."""
    base = pooled([r for r in rows if r["param"] == "vanilla"]).tokens_per_s
    out = {}
    for knob in KNOBS:
        mine = [r for r in rows if r["param"] == knob]
        values = sorted({r["value"] for r in mine})
        pts = []
        for v in values:
            s = pooled([r for r in mine if r["value"] == v])
            pts.append((v, s.tau or 0.0, s.tokens_per_s / base if base else 0.0))
        if pts:
            out[knob] = pts
    return out


def best(points: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The fastest value of one knob."""
    return max(points, key=lambda p: p[2])


def label_side(xs: list[str], x: str) -> str:
    """Where the ★ label goes: above the star, leaning inwards at either end of a panel so it is not cut off."""
    if len(xs) > 1 and x == xs[-1]:
        return "top left"
    if len(xs) > 1 and x == xs[0]:
        return "top right"
    return "top center"


def sweep_figure(rows: list[dict] | None = None) -> go.Figure:
    pts = sweep_points(read_sweep() if rows is None else rows)
    if not pts:
        return styled(go.Figure(), title="No sweep shipped with this app", height=300)
    knobs = list(pts)
    fig = make_subplots(rows=2, cols=len(knobs), subplot_titles=knobs, shared_yaxes="rows",
                        vertical_spacing=0.14, horizontal_spacing=0.04)
    for c, knob in enumerate(knobs, 1):
        xs = [str(v) for v, _, _ in pts[knob]]            # categories: LOI 1..64 and DET 0..0.9 read evenly
        fig.add_trace(go.Scatter(x=xs, y=[t for _, t, _ in pts[knob]], mode="lines+markers", name="τ",
                                 line=dict(color=SKIPPED), showlegend=c == 1, legendgroup="tau",
                                 hovertemplate=f"{knob} %{{x}}: τ %{{y:.2f}}<extra></extra>"), row=1, col=c)
        fig.add_trace(go.Scatter(x=xs, y=[s for _, _, s in pts[knob]], mode="lines+markers", name="× vanilla",
                                 line=dict(color=ACCEPTED), showlegend=c == 1, legendgroup="speed",
                                 hovertemplate=f"{knob} %{{x}}: %{{y:.2f}}× vanilla<extra></extra>"), row=2, col=c)
        v, _, s = best(pts[knob])
        fig.add_trace(go.Scatter(x=[str(v)], y=[s], mode="markers+text", text=[f"★ {s:.2f}×"],
                                 textposition=label_side(xs, str(v)), cliponaxis=False,
                                 marker=dict(symbol="star", size=14, color=CURRENT),
                                 name="fastest", showlegend=c == 1, legendgroup="best",
                                 hovertemplate=f"fastest {knob}: %{{x}} (%{{y:.2f}}× vanilla)<extra></extra>"),
                      row=2, col=c)
    fig.update_xaxes(type="category")
    fig.update_yaxes(title_text="τ", row=1, col=1)
    fig.update_yaxes(title_text="× vanilla", row=2, col=1)
    top = max(s for p in pts.values() for _, _, s in p)
    fig.update_yaxes(range=[0, max(1.05, top * 1.25)], row=2)
    return styled(fig, title="One knob at a time (CPU sweep)", height=480,
                  margin=dict(l=55, r=15, t=70, b=40),
                  legend=dict(orientation="h", y=-0.08, x=0.5, xanchor="center"))

"""The layer DP's table D(i, j) with the backtracked path and the chosen skip set."""
from __future__ import annotations

import plotly.graph_objects as go

from clasp_core.trace import LayerChoice

from .palette import DP


def dp_figure(choice: LayerChoice | None) -> go.Figure:
    fig = go.Figure()
    if choice is None:
        fig.update_layout(title="DP table (appears once the layer DP runs; auto runs it only when drafting pays)",
                          template="plotly_white", height=420)
        return fig
    z = [[v for v in row] for row in choice.D]          # rows i = 0..L, columns j = 0..M
    fig.add_trace(go.Heatmap(z=z, colorscale="Viridis", colorbar=dict(title="cos"),
                             hovertemplate="after %{y} layers, %{x} skipped: D = %{z:.4f}<extra></extra>"))
    js = [j for i, j in choice.path]
    is_ = [i for i, j in choice.path]
    fig.add_trace(go.Scatter(x=js, y=is_, mode="lines+markers", line=dict(color=DP, width=3),
                             marker=dict(size=6), name="backtracked path", hoverinfo="skip"))
    fig.update_layout(title=f"D(i, j) at position {choice.position} — skip {choice.skip}",
                      xaxis_title="j = layers skipped so far", yaxis_title="i = layers processed",
                      template="plotly_white", height=460, margin=dict(l=50, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=-0.15))
    return fig


def choice_label(c: LayerChoice) -> str:
    return f"before round {c.round} (pos {c.position}, {c.seconds * 1e3:.0f} ms)"

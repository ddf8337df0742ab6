"""Layer map: rounds x layers, skipped layers marked, DP refreshes and the current round visible."""
from __future__ import annotations

import plotly.graph_objects as go

from .palette import DP, RAN, SKIPPED
from .state import RunView


def skip_matrix(view: RunView) -> list[list[int]]:
    """z[layer][round] = 1 where the draft of that round skipped the layer."""
    L = view.num_layers
    z = [[0] * len(view.rounds) for _ in range(L)]
    for c, r in enumerate(view.rounds):
        for layer in r.skip:
            z[layer][c] = 1
    return z


def layer_map_figure(view: RunView | None, current: int | None = None) -> go.Figure:
    fig = go.Figure()
    if view is None or not view.rounds:
        fig.update_layout(title="Layer map (appears once rounds run)", template="plotly_white", height=360)
        return fig
    z = skip_matrix(view)
    x = [r.index for r in view.rounds]
    fig.add_trace(go.Heatmap(z=z, x=x, y=list(range(view.num_layers)), zmin=0, zmax=1, showscale=False,
                             colorscale=[[0, RAN], [1, SKIPPED]], xgap=1, ygap=1,
                             hovertemplate="round %{x}, layer %{y}: %{customdata}<extra></extra>",
                             customdata=[["skipped" if v else "ran" for v in row] for row in z]))
    for c in view.choices[1:]:  # the first choice comes with prefill
        fig.add_vline(x=c.round - 0.5, line=dict(color=DP, width=2, dash="dot"))
    if current is not None:
        fig.add_vrect(x0=current - 0.5, x1=current + 0.5, line=dict(color="#111827", width=2), fillcolor="rgba(0,0,0,0)")
    fig.update_layout(title="Skipped layers per round (purple = skipped; dotted = layer DP re-ran)",
                      xaxis_title="round", yaxis_title="layer", template="plotly_white", height=380,
                      margin=dict(l=50, r=20, t=50, b=40))
    return fig

"""Layer map: rounds x layers, skipped layers marked, DP refreshes and the current round visible."""
from __future__ import annotations

from .figure import Figure
from .palette import COPIED, CURRENT, DP, RAN, SKIPPED, styled
from .palette import PLAIN_ROUND as PLAIN_COLOUR
from .state import RunView, is_below_det, is_copied, is_plain

DET_NOTE = " (below DET: the draft ran one step, its first guess fell below DET, nothing was drafted)"

PLAIN_ROUND = 0.5          # z value of a column where no draft ran (a plain full-model step)
COPIED_ROUND = 0.25        # z value of a column whose draft was copied from the context (no layer ran a draft)


def skip_matrix(view: RunView) -> list[list[float]]:
    """z[layer][round] = 1 where the draft of that round skipped the layer (0.5 for a whole plain round,
    0.25 for a whole round of copied drafts)."""
    L = view.num_layers
    z = [[0] * len(view.rounds) for _ in range(L)]
    for c, r in enumerate(view.rounds):
        if is_plain(r) or is_copied(r):
            for layer in range(L):
                z[layer][c] = COPIED_ROUND if is_copied(r) else PLAIN_ROUND
        for layer in r.skip:
            z[layer][c] = 1
    return z


def refresh_rounds(view: RunView) -> list[int]:
    """Rounds (0-based) from which a re-chosen skip set was in force: every layer choice after round 0."""
    return [c.round for c in view.choices if c.round > 0]


def layer_map_figure(view: RunView | None, current: int | None = None) -> Figure:
    """``current``: 0-based index of the round to outline."""
    fig = Figure()
    if view is None or not view.rounds:
        return styled(fig, title="Layer map (appears once rounds run)", height=360)
    z = skip_matrix(view)
    x = [r.index + 1 for r in view.rounds]
    label = {0: "ran", PLAIN_ROUND: "plain step (no draft)", COPIED_ROUND: "copied from the context (prompt lookup)",
             1: "skipped"}
    fig.add_trace("heatmap", z=z, x=x, y=list(range(view.num_layers)), zmin=0, zmax=1, showscale=False,
                  colorscale=[[0, RAN], [COPIED_ROUND, COPIED], [0.5, PLAIN_COLOUR], [1, SKIPPED]],
                  xgap=1, ygap=1,
                  hovertemplate="round %{x}, layer %{y}: %{customdata}<extra></extra>",
                  customdata=[[label[v] + (DET_NOTE if is_below_det(r) else "") for v, r in zip(row, view.rounds)]
                              for row in z])
    refresh = refresh_rounds(view)
    if refresh:                       # one trace for all refresh lines (add_vline per line is slow)
        xs, ys = [], []
        for r in refresh:
            xs += [r + 0.5, r + 0.5, None]
            ys += [-0.5, view.num_layers - 0.5, None]
        fig.add_trace("scatter", x=xs, y=ys, mode="lines", line=dict(color=DP, width=2, dash="dot"),
                      name="layer DP re-ran", hoverinfo="skip", showlegend=False)
    if current is not None and 0 <= current < len(view.rounds):
        c = view.rounds[current].index + 1
        fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=-0.5, y1=view.num_layers - 0.5,
                      line=dict(color=CURRENT, width=3), fillcolor="rgba(0,0,0,0)")
    return styled(fig, title="Skipped layers per round", xaxis_title="round", yaxis_title="layer", height=380,
                  showlegend=False,
                  margin=dict(l=50, r=20, t=50, b=40))

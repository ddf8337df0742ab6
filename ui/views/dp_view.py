"""The layer DP's table D(i, j) with the backtracked path of the skip set the draft really used."""
from __future__ import annotations

from clasp_core.layer_dp import backtrack
from clasp_core.trace import LayerChoice

from .figure import Figure
from .palette import CURRENT, DP, styled
from .state import RunView, is_plain

READING_GUIDE = (
    "**Reading the table.** Row *i* = the first *i* decoder layers have been processed; column *j* = how many "
    "of them the draft skipped. Each cell is the cosine similarity between the best draft hidden state with "
    "that budget and the full model's own state after layer *i* (1 = identical). From cell (i−1, ·) the DP "
    "either **keeps** layer i−1 (a step straight down) or **skips** it (a step down and one column right). "
    "The yellow path, backtracked from the bottom-right cell (L, M), is the skip set: every diagonal step is "
    "a skipped layer. *pos* is the position of the last accepted token in the whole sequence (prompt "
    "included), whose per-layer states fed the DP.")


def used_skip_sizes(view: RunView | None, choice: LayerChoice) -> list[int]:
    """The M values that drafting rounds actually used while this choice was in force."""
    if view is None:
        return []
    sizes = {len(r.skip) for r in view.rounds
             if r.skip and not is_plain(r) and view.choice_for(r) is choice}
    return sorted(sizes)


def dp_figure(choice: LayerChoice | None, used: list[int] | None = None) -> Figure:
    """``used``: skip-set sizes the draft used under this choice (auto may use several, each a path)."""
    fig = Figure()
    if choice is None:
        return styled(fig, title="The DP table appears once the layer DP runs", height=420)
    if not choice.D:
        return styled(fig, title=f"No DP table: the '{getattr(choice, 'strategy', '')}' layer choice picked "
                                 f"skip {choice.skip} without one", height=300)
    z = [list(row) for row in choice.D]               # rows i = 0..L, columns j = 0..M
    vals = sorted(v for row in z for v in row if v is not None)
    zmin = vals[len(vals) // 20] if vals else 0.0     # stretch the colours over the values that occur
    fig.add_trace("heatmap", z=z, colorscale="Viridis", zmin=zmin, zmax=1.0, colorbar=dict(title=dict(text="cos")),
                  texttemplate="%{z:.2f}", textfont=dict(size=8),
                  hovertemplate="after %{y} layers, %{x} skipped: D = %{z:.4f}<extra></extra>")
    paths = [(choice.num_skip, choice.path)]
    flags = getattr(choice, "flags", None)
    L = len(choice.D) - 1
    for m in used or []:
        if flags and m != choice.num_skip:
            paths.append((m, backtrack(flags, L, m)[1]))
    for n, (m, path) in enumerate(paths):
        fig.add_trace("scatter", x=[j for i, j in path], y=[i for i, j in path], mode="lines+markers",
                      line=dict(color=DP if n == 0 else CURRENT, width=3), marker=dict(size=6),
                      name=f"path for M = {m}", hoverinfo="skip")
    return styled(fig, title=f"D(i, j) at pos {choice.position} — skip {choice.skip}",
                  xaxis_title="j = layers skipped so far", yaxis=dict(title="i = layers processed",
                                                                      autorange="reversed"),
                  height=520, margin=dict(l=50, r=20, t=60, b=40), legend=dict(orientation="h", y=-0.12))


def choice_label(c: LayerChoice) -> str:
    return f"before round {c.round + 1} (pos {c.position}, {c.seconds * 1e3:.0f} ms)"

"""The paper's analyses from a live trace: skip-set persistence and accepted lengths."""
from __future__ import annotations

from collections import Counter, defaultdict

import plotly.graph_objects as go

from .palette import ACCEPTED, SKIPPED, styled
from .state import RunView


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def jaccard_by_distance(view: RunView, max_distance: int = 32) -> dict[int, float]:
    """Mean Jaccard similarity of the skip sets of rounds d apart (drafting rounds only)."""
    sets = [set(r.skip) for r in view.rounds if r.skip]
    acc = defaultdict(list)
    for i in range(len(sets)):
        for d in range(1, min(max_distance, len(sets) - 1 - i) + 1):
            acc[d].append(jaccard(sets[i], sets[i + d]))
    return {d: sum(v) / len(v) for d, v in sorted(acc.items())}


def persistence_figure(view: RunView | None) -> go.Figure:
    fig = go.Figure()
    data = jaccard_by_distance(view) if view else {}
    if data:
        fig.add_trace(go.Scatter(x=list(data), y=list(data.values()), mode="lines+markers",
                                 line=dict(color=SKIPPED), name="Jaccard"))
    return styled(fig, title="Skip-set persistence: Jaccard vs rounds apart", xaxis_title="rounds apart",
                  yaxis_title="mean Jaccard", yaxis_range=[0, 1.05], height=320,
                  margin=dict(l=50, r=20, t=50, b=40))


def accepted_histogram(view: RunView | None) -> go.Figure:
    fig = go.Figure()
    counts = Counter(r.accepted for r in view.rounds if r.drafted) if view else Counter()
    if counts:
        xs = list(range(0, max(counts) + 1))
        fig.add_trace(go.Bar(x=xs, y=[counts.get(x, 0) for x in xs], marker_color=ACCEPTED, name="rounds"))
    return styled(fig, title="Accepted draft tokens per round", xaxis_title="accepted", yaxis_title="rounds",
                  height=320, margin=dict(l=50, r=20, t=50, b=40))

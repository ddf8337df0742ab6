"""The paper's analyses from a live trace: skip-set persistence and accepted lengths."""
from __future__ import annotations

from collections import Counter, defaultdict

from .figure import Figure
from .palette import ACCEPTED, BELOW_DET, BELOW_DET_RULE, SKIPPED, styled
from .state import RunView, is_below_det


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


def persistence_figure(view: RunView | None) -> Figure:
    fig = Figure()
    data = jaccard_by_distance(view) if view else {}
    if data:
        fig.add_trace("scatter", x=list(data), y=list(data.values()), mode="lines+markers",
                      line=dict(color=SKIPPED), name="Jaccard")
    return styled(fig, title="Skip-set persistence", xaxis_title="rounds apart",
                  yaxis_title="mean Jaccard", yaxis=dict(range=[0, 1.05]), height=320,
                  margin=dict(l=50, r=20, t=50, b=40))


def accepted_histogram(view: RunView | None) -> Figure:
    """Accepted drafts per drafting round; rounds cut at DET (0 tokens drafted) are drafting rounds too,
    stacked at 0 in their own colour."""
    fig = Figure()
    rounds = [r for r in view.rounds if r.drafting] if view else []
    counts = Counter(r.accepted for r in rounds if r.drafted)
    det = sum(is_below_det(r) for r in rounds)
    if counts or det:
        xs = list(range(0, max(counts, default=0) + 1))
        fig.add_trace("bar", x=xs, y=[counts.get(x, 0) for x in xs], marker=dict(color=ACCEPTED),
                      name="drafted", hovertemplate="%{y} round(s) accepted %{x} draft(s)<extra></extra>")
        if det:
            fig.add_trace("bar", x=[0], y=[det], marker=dict(color=BELOW_DET), name="below DET",
                          hovertemplate=f"%{{y}} round(s) below DET: {BELOW_DET_RULE}<extra></extra>")
    return styled(fig, title=f"Accepted drafts per drafting round ({len(rounds)})", xaxis_title="accepted",
                  yaxis_title="rounds", barmode="stack", height=320, margin=dict(l=50, r=20, t=50, b=40),
                  legend=dict(orientation="h", y=1.0, x=1, xanchor="right", yanchor="bottom"))


def persistence_note(view: RunView | None) -> str:
    """What the persistence curve of this run can and cannot say (never more than the run supports)."""
    data = jaccard_by_distance(view) if view else {}
    if not data:
        return ""
    drafting = [r for r in view.rounds if r.skip]
    p = view.config
    strategy = p.strategy
    chosen = len({id(view.choice_for(r)) for r in drafting})
    every = len(drafting) / max(1, chosen)
    if strategy != "clasp" or p.auto or p.loi > 1 or chosen < len(drafting) * 0.5:
        how = ("auto stretched LOI" if p.auto else
               f"LOI was {p.loi}" if strategy == "clasp" else f"the {view.source} layer choice fixes it")
        return (f"*Reading this run:* the skip set was chosen {chosen}× for {len(drafting)} drafting rounds "
                f"(about every {every:.0f} rounds: {how}), so rounds closer than that share their set by "
                f"construction and the curve cannot tell how fast the set *would* change. To measure that, run "
                f"CLaSp with auto off and LOI 1.")
    d1 = data.get(1)
    far = max(data)
    return (f"*Reading this run* (the DP re-ran every round): skip sets one round apart share on average "
            f"{d1:.2f} of their layers (Jaccard), and {data[far]:.2f} at {far} rounds apart. The closer to 1, the "
            f"less a set chosen LOI rounds ago differs from the one the DP would choose now.")

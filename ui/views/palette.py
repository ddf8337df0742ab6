"""One colour scheme for every view, and one figure style that reads on light and dark pages."""
from __future__ import annotations

from .figure import Figure

ACCEPTED = "#2e9d5b"     # a draft token the full model accepted
REJECTED = "#d64545"     # a draft token the full model rejected
CORRECTED = "#e08a1e"    # the full model's own token at the first mismatch
BONUS = "#3b6fd8"        # the full model's extra token after a fully accepted draft
PLAIN = "#6b7280"        # a token from a plain full-model step (prefill, vanilla, auto fallback)
BELOW_DET = "#a16207"    # a round whose draft ran but whose first guess fell below DET (nothing drafted)
SKIPPED = "#7c3aed"      # a layer the draft skipped
RAN = "#c9cfda"          # a layer the draft ran (mid-grey: visible on white and on dark backgrounds)
PLAIN_ROUND = "#eef0f4"  # a round where no draft ran (a plain full-model step)
COPIED = "#14b8a6"       # a draft copied from the context (prompt lookup): its token outline, its layer-map column
DP = "#f2c14e"           # a layer-DP refresh / the backtracked path
CURRENT = "#f97316"      # the round being stepped through (outline)
VANILLA = "#9aa3b2"
VERIFY = "#2e9d5b"
SERIES = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")   # strategies, methods

KIND_COLOURS = {"accepted": ACCEPTED, "rejected": REJECTED, "corrected": CORRECTED, "bonus": BONUS,
                "plain": PLAIN, "det": BELOW_DET}
KIND_LABELS = {"accepted": "draft accepted", "rejected": "draft rejected", "corrected": "corrected by full model",
               "bonus": "bonus token", "plain": "full-model step", "det": "below DET (draft discarded)"}
# One sentence for a round cut at DET, wherever the page shows one (token hover, slow motion, Rounds, Teach).
BELOW_DET_RULE = ("below DET: the draft ran one step, but its first guess fell below the confidence threshold DET, "
                  "so nothing was drafted; the full model's step made this round's token. It counts as a drafting "
                  "round: its draft step cost time and produced 0 tokens")

# Transparent backgrounds and a mid-grey font: the page's own theme (light or dark) shows through.
# No plotly template: applying one costs 20-60 ms a figure, more than the rest of the figure.
_GRID = "rgba(128, 128, 128, 0.25)"
FIGURE_LAYOUT = dict(template="none", paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
                     font=dict(color="#8b93a1", family="Inter, system-ui, sans-serif"), colorway=list(SERIES),
                     hovermode="closest")


_AXIS = dict(gridcolor=_GRID, zerolinecolor=_GRID, linecolor=_GRID)


def styled(fig, title: str | None = None, xaxis_title: str | None = None, yaxis_title: str | None = None,
           **layout):
    """Apply the shared figure style, a title and any other layout to a figure: a ``ui.figure.Figure``
    (the live views) or a plotly.py figure (the sweep, built once). Layout values are plotly's own
    (nested as dicts); an axis or figure title may be given as a plain string. Every axis gets the grid
    style."""
    titles = {k: v for k, v in dict(title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title).items() if v}
    if not isinstance(fig, Figure):
        fig.update_layout(**FIGURE_LAYOUT, **titles, **layout)
        fig.update_xaxes(**_AXIS)
        fig.update_yaxes(**_AXIS)
        return fig
    out = {k: v for k, v in FIGURE_LAYOUT.items() if k != "template"}   # plotly.js has no template by default
    out.update(layout)
    for axis, text in (("xaxis", xaxis_title), ("yaxis", yaxis_title)):
        out[axis] = {**({"title": text} if text else {}), **out.get(axis, {})}
    for key in [k for k in out if k.startswith(("xaxis", "yaxis"))]:
        out[key] = {**out[key], **_AXIS, **_title_as_dict(out[key].get("title"))}
    out.update(_title_as_dict(title))
    return fig.update_layout(**out)


def _title_as_dict(title) -> dict:
    """{"title": {"text": ...}} for a title given as a string (plotly.js reads a title as {"text": ...};
    plotly.py converts a plain string, here we do), {"title": title} for one given whole, {} for none."""
    if not title:
        return {}
    return {"title": {"text": title} if isinstance(title, str) else title}

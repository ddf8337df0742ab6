"""One colour scheme for every view, and one figure style that reads on light and dark pages."""
from __future__ import annotations

from .figure import Figure

ACCEPTED = "#2e9d5b"     # a draft token the full model accepted
REJECTED = "#d64545"     # a draft token the full model rejected
CORRECTED = "#e08a1e"    # the full model's own token at the first mismatch
BONUS = "#3b6fd8"        # the full model's extra token after a fully accepted draft
PLAIN = "#6b7280"        # a token from a plain full-model step (prefill, vanilla, auto fallback)
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
                "plain": PLAIN}
KIND_LABELS = {"accepted": "draft accepted", "rejected": "draft rejected", "corrected": "corrected by full model",
               "bonus": "bonus token", "plain": "full-model step"}

# Transparent backgrounds and a mid-grey font: the page's own theme (light or dark) shows through.
# No plotly template: applying one costs 20-60 ms a figure, more than the rest of the figure.
_GRID = "rgba(128, 128, 128, 0.25)"
FIGURE_LAYOUT = dict(template="none", paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
                     font=dict(color="#8b93a1", family="Inter, system-ui, sans-serif"), colorway=list(SERIES),
                     hovermode="closest")


def styled(fig, title: str | None = None, xaxis_title: str | None = None, yaxis_title: str | None = None,
           **layout):
    """Apply the shared figure style, a title and any other layout to a figure: a ``ui.figure.Figure``
    (the live views) or a plotly.py figure (the sweep, built once). Layout values are plotly's own
    (nested as dicts); an axis or figure title may be given as a plain string."""
    titles = {k: v for k, v in dict(title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title).items() if v}
    if not isinstance(fig, Figure):
        fig.update_layout(**FIGURE_LAYOUT, **titles, **layout)
        fig.update_xaxes(gridcolor=_GRID, zerolinecolor=_GRID, linecolor=_GRID)
        fig.update_yaxes(gridcolor=_GRID, zerolinecolor=_GRID, linecolor=_GRID)
        return fig
    out = {k: v for k, v in FIGURE_LAYOUT.items() if k != "template"}   # plotly.js has no template by default
    out.update(layout)
    for axis, text in (("xaxis", xaxis_title), ("yaxis", yaxis_title)):
        out[axis] = {**_AXIS, **({"title": text} if text else {}), **out.get(axis, {})}
    if title:
        out["title"] = title
    for key, value in out.items():
        if key == "title" or key.startswith(("xaxis", "yaxis")):
            _title_as_dict(out, key, value)
    return fig.update_layout(**out)


_AXIS = dict(gridcolor=_GRID, zerolinecolor=_GRID, linecolor=_GRID)


def _title_as_dict(layout: dict, key: str, value) -> None:
    """plotly.js reads a title as {"text": ...} (plotly.py converts a plain string; here we do)."""
    if key == "title" and isinstance(value, str):
        layout[key] = {"text": value}
    elif isinstance(value, dict) and isinstance(value.get("title"), str):
        layout[key] = {**value, "title": {"text": value["title"]}}

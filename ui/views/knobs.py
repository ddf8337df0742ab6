"""The page's run-setting widgets, each made from its row of ``clasp_core.settings``.

The slider's range, step, starting value and label come from the table, so the page offers what the
engine and the bench call the same knob; the app adds what only the page knows (M's top for the model
in memory, the notes auto writes next to the knobs it overrides).
"""
from __future__ import annotations

import gradio as gr

from clasp_core.settings import SETTINGS


def knob(name: str, **overrides) -> gr.Component:
    """A checkbox, number box or slider for the setting ``name``; ``overrides`` are Gradio keyword args."""
    s = SETTINGS[name]
    kw = dict(label=s.label, value=s.start) | overrides
    if s.kind is bool:
        return gr.Checkbox(**kw)
    if s.hi is None and "maximum" not in overrides or name == "seed":    # no range to slide over
        return gr.Number(precision=0 if s.kind is int else None, **kw)
    kw.setdefault("minimum", s.lo)
    kw.setdefault("maximum", s.hi)
    return gr.Slider(step=s.step, **kw)

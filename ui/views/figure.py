"""The page's live figures as plotly's own JSON, built without plotly.py's objects.

A ``gr.Plot`` sends plotly.js a figure as JSON. plotly.py builds and validates an object for every
trace, axis and property on the way there: 10-14 ms per figure of this page, about 70 ms for the six
that the last snapshot of every run renders, which is what a visitor waits for after the engine is done.
A ``Figure`` here holds the same data and layout as plain dicts, in plotly's documented
schema (https://plotly.com/javascript/reference/), and serialises it with ``plotly.io.to_json``
without validation; ``to_plotly()`` gives the validated plotly.py figure, which the tests build from
every figure so that a misspelled property still fails there.

Only what the views use is here: traces as dicts (``type`` first, as plotly.js reads them), shapes,
and attribute access (``fig.data[0].z``, ``fig.layout.title.text``) for reading a figure back.
"""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import plotly.io as pio


class Node(dict):
    """A dict read by attribute as well (``node.title.text``), as a plotly.py object is read."""

    def __getattr__(self, name: str) -> Any:
        try:
            return _node(self[name])
        except KeyError:
            raise AttributeError(name) from None


def _node(value: Any) -> Any:
    if isinstance(value, dict):
        return value if isinstance(value, Node) else Node(value)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [_node(v) for v in value]
    return value


class Figure:
    """A plotly figure as data: ``data`` (traces) and ``layout``, both plain dicts inside."""

    def __init__(self) -> None:
        self._data: list[dict] = []
        self._layout: dict = {}

    def add_trace(self, type: str, **props: Any) -> Figure:    # noqa: A002 - plotly's own key
        self._data.append({"type": type, **props})
        return self

    def add_shape(self, **props: Any) -> Figure:
        self._layout.setdefault("shapes", []).append(props)
        return self

    def update_layout(self, **props: Any) -> Figure:
        """Set top-level layout properties (nested ones as dicts; no magic underscores)."""
        self._layout.update(props)
        return self

    @property
    def data(self) -> list[Node]:
        return [Node(t) for t in self._data]

    @property
    def layout(self) -> Node:
        return Node(self._layout)

    def to_dict(self) -> dict:
        return {"data": self._data, "layout": self._layout}

    def to_json(self) -> str:
        """What ``gr.Plot`` sends to the page (it calls ``to_json`` on a plotly figure)."""
        return pio.to_json(self.to_dict(), validate=False)

    def to_plotly(self) -> go.Figure:
        """The same figure as a validated plotly.py object (an unknown property raises here)."""
        return go.Figure(self.to_dict())

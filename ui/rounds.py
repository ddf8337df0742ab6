"""The round table (a pandas DataFrame) and the trace as a file."""
from __future__ import annotations

import pandas as pd

from .state import RunView

COLUMNS = ["round", "drafted", "accepted", "next", "kind", "tau so far", "draft ms", "verify ms", "skipped layers"]


def rounds_dataframe(view: RunView | None) -> pd.DataFrame:
    if view is None or not view.rounds:
        return pd.DataFrame(columns=COLUMNS)
    rows, emitted = [], 1
    for n, r in enumerate(view.rounds, 1):
        emitted += len(r.emitted)
        rows.append({"round": r.index, "drafted": len(r.drafted), "accepted": r.accepted,
                     "next": r.next_text, "kind": r.next_kind if r.drafted else "plain",
                     "tau so far": round((emitted - 1) / n, 2), "draft ms": round(r.draft_s * 1e3, 1),
                     "verify ms": round(r.verify_s * 1e3, 1), "skipped layers": " ".join(map(str, r.skip))})
    return pd.DataFrame(rows, columns=COLUMNS)

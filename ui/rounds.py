"""The round table (a pandas DataFrame): one row per draft-verify round."""
from __future__ import annotations

import pandas as pd

from clasp_core.metrics import tau

from .state import RunView, is_plain

COLUMNS = ["round", "kind", "drafted", "accepted", "added", "full model's token", "tau so far", "draft ms",
           "verify ms", "skipped layers"]
LEGEND = ("**Columns.** *kind*: **bonus** = every draft token accepted, the full model added one more; "
          "**corrected** = a draft token was rejected and the full model's own token replaced it; **plain** = no "
          "draft ran (a full-model step); **no draft** = the draft's first guess was below DET; **cut** = the run "
          "ended (EOS or token limit) inside the round. *added*: tokens this round put in the output. "
          "*full model's token*: the token the verification itself produced (empty when it was cut). "
          "*tau so far*: mean tokens added per round up to this one (τ).")


def round_kind(r) -> str:
    if is_plain(r):
        return "plain"
    if not r.drafted:
        return "no draft"
    if len(r.emitted) <= r.accepted:
        return "cut"
    return r.next_kind


def rounds_dataframe(view: RunView | None) -> pd.DataFrame:
    if view is None or not view.rounds:
        return pd.DataFrame(columns=COLUMNS)
    rows, emitted = [], 1
    for n, r in enumerate(view.rounds, 1):
        emitted += len(r.emitted)
        rows.append({"round": r.index + 1, "kind": round_kind(r), "drafted": len(r.drafted), "accepted": r.accepted,
                     "added": len(r.emitted), "full model's token": r.next_text if len(r.emitted) > r.accepted else "",
                     "tau so far": round(tau(emitted, n), 2), "draft ms": round(r.draft_s * 1e3, 1),
                     "verify ms": round(r.verify_s * 1e3, 1), "skipped layers": " ".join(map(str, r.skip))})
    return pd.DataFrame(rows, columns=COLUMNS)

"""The round table (a pandas DataFrame): one row per draft-verify round."""
from __future__ import annotations

import pandas as pd

from clasp_core.costs import OUTLIER, outlier_rounds
from clasp_core.metrics import tau

from .palette import BELOW_DET_RULE
from .state import RunView, is_below_det

COLUMNS = ["round", "kind", "drafted", "accepted", "added", "full model's token", "tau so far", "draft ms",
           "verify ms", "skipped layers", "note"]
LEGEND = ("**Columns.** *kind*: **bonus** = every draft token accepted, the full model added one more; "
          "**corrected** = a draft token was rejected and the full model's own token replaced it; **plain** = no "
          "draft ran (a full-model step); **" + BELOW_DET_RULE.replace(":", "** =", 1) + "; **cut** = the run "
          "ended (EOS or token limit) inside the round. *added*: tokens this round put in the output. "
          "*full model's token*: the token the verification itself produced (empty when it was cut). "
          "*tau so far*: mean tokens added per round up to this one (τ, all rounds). *note*: **slow** marks a round "
          f"over {OUTLIER:.0f}× the median time of its kind (a warm-up step, a background job); the cost model "
          "leaves it out.")


def round_kind(r) -> str:
    if is_below_det(r):
        return "below DET"
    if r.plain or not r.drafted:
        return "plain"
    if len(r.emitted) <= r.accepted:
        return "cut"
    return r.next_kind


def rounds_dataframe(view: RunView | None) -> pd.DataFrame:
    if view is None or not view.rounds:
        return pd.DataFrame(columns=COLUMNS)
    rows, emitted = [], 1
    slow = outlier_rounds(view.rounds)
    for n, r in enumerate(view.rounds, 1):
        emitted += len(r.emitted)
        rows.append({"round": r.index + 1, "kind": round_kind(r), "drafted": len(r.drafted), "accepted": r.accepted,
                     "added": len(r.emitted), "full model's token": r.next_text if len(r.emitted) > r.accepted else "",
                     "tau so far": round(tau(emitted, n), 2), "draft ms": round(r.draft_s * 1e3, 1),
                     "verify ms": round(r.verify_s * 1e3, 1), "skipped layers": " ".join(map(str, r.skip)),
                     "note": f"slow: {slow[r.index]:.0f}× the median" if r.index in slow else ""})
    return pd.DataFrame(rows, columns=COLUMNS)

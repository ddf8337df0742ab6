"""Why auto chose what it chose: its measured costs and each choice's predicted speed, in words.

Every round of an auto run carries ``Round.auto`` (clasp_core.auto.AutoPolicy.note); the status line
and Teach read it here, so both say the same thing.
"""
from __future__ import annotations

from clasp_core.metrics import acceptance_rate

from .state import RunView

REASONS = {
    "measure": "auto took a plain step to measure what one costs (the run's first plain step is left out as "
               "warm-up; drafting is priced only once {n} more are measured)",
    "feed": "auto wanted to draft, so this plain step fed the layer DP the hidden states it chooses layers from",
    "hold": "drafting had measured slower than plain steps over auto's last drafting rounds, so auto fell back to "
            "plain steps for a while ({hold} more) before trying again",
    "probe": "auto took a plain step to re-measure what one costs while drafting (once every 16 drafting rounds), "
             "so a machine that got slower or faster is noticed",
}


def measured_costs_text(note: dict) -> str:
    """'plain step 53 ms, a draft step (M = 14) 0.62 of it, verifying k drafts 1 + 0.35·k steps'."""
    if not note or note.get("step_ms") is None:
        return ""
    parts = [f"plain step {note['step_ms']:.0f} ms (median of recent ones)"]
    if note.get("r_draft") is not None:
        est = "" if note.get("draft_measured") else " (estimated from the weights it reads: not drafted yet)"
        parts.append(f"a draft step with M = {note['M']} skipped {note['r_draft']:.2f} of it{est}")
    if note.get("verify_slope") is not None:
        parts.append(f"verifying k drafts 1 + {note['verify_slope']:.2f}·k steps")
    return ", ".join(parts)


def prediction_text(note: dict) -> str:
    """'best draft (M = 14, K = 2): 0.93× a plain step's speed; plain step: 1.00×'."""
    if not note or note.get("draft_speed") is None:
        return ""
    return (f"best draft (M = {note['M']}, K = {note['K']}, acceptance {note['alpha']:.2f}) predicted "
            f"{note['draft_speed']:.2f}× a plain step's speed, a plain step 1.00×")


def round_reason(note: dict | None) -> str:
    """One sentence: why auto planned this round as it did."""
    if not note:
        return ""
    reason = note.get("reason")
    if reason in REASONS:
        from clasp_core.auto import AutoPolicy

        text = REASONS[reason].format(n=AutoPolicy.MIN_PLAIN, hold=note.get("hold", 0))
        costs = measured_costs_text(note)
        return text + (f" (measured so far: {costs})" if costs else "")
    costs, pred = measured_costs_text(note), prediction_text(note)
    verdict = ("so it drafted" if note.get("choice") == "draft"
               else f"so it took a plain step (it drafts only above {1.05:.2f}×)")
    return f"auto measured {costs}; {pred}, {verdict}"


def auto_summary(view: RunView | None, device: str) -> str:
    """The status line's note on an auto run: what auto did, with the numbers it decided from."""
    if view is None or not view.config.auto:
        return ""
    rounds = view.rounds
    drafting = [r for r in rounds if r.drafting]
    last = next((r.auto for r in reversed(rounds) if r.auto and r.auto.get("step_ms") is not None), None)
    why = ""
    if last:
        why = f" It decided from what it measured: {measured_costs_text(last)}"
        pred = prediction_text(last)
        why += f"; at the end, {pred}." if pred else "."
        if last.get("fallbacks"):
            why += f" Drafting measured slower than plain steps {last['fallbacks']}× and auto fell back to plain steps."
    if not drafting:
        return (f"  \n**auto decoded plainly**: on this device ({device}) drafting was predicted slower than plain "
                f"steps in every round.{why} Untick *auto* to watch CLaSp draft anyway.")
    ks = [r.k_max for r in drafting]
    ms = sorted({len(r.skip) for r in drafting})
    d = view.done
    dp = ""
    if d and d.dp_calls:
        dp = (f"; the layer DP ran {d.dp_calls}× and took {100 * d.dp_s / d.wall_s:.1f}% of the time "
              f"(auto stretches LOI aiming at about 3%)")
    accepted = sum(r.accepted for r in drafting)
    proposed = sum(len(r.drafted) for r in drafting)
    return (f"  \n**auto**: drafted in {len(drafting)} of {len(rounds)} rounds, K = {min(ks)}–{max(ks)} per "
            f"drafting round (the K slider is its upper bound), M ∈ {{{', '.join(map(str, ms))}}}, "
            f"{acceptance_rate(accepted, proposed):.0%} of draft tokens accepted; DET was not used (auto drafts "
            f"the K it planned and lets the full model judge them){dp}.{why}")

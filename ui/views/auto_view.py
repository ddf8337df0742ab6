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


def _window(n: int | None, what: str) -> str:
    """'the median of its last 9 plain steps' (an older trace, without the count: 'up to 9')."""
    from clasp_core.auto import WINDOW

    return f"the median of its last {n} {what}" if n else f"the median of up to {WINDOW} recent {what}"


def measured_costs_text(note: dict) -> str:
    """Each input auto priced with, saying whether it was measured (and over which window) or assumed."""
    if not note or note.get("step_ms") is None:
        return ""
    parts = [f"a plain step {note['step_ms']:.0f} ms (measured: {_window(note.get('plain_n'), 'plain steps')}, "
             f"the run's first left out as warm-up; capped by the median of its last 3 verifications once it has "
             f"some)"]
    if note.get("r_draft") is not None:
        if note.get("draft_measured"):
            how = f"measured: {_window(note.get('draft_n'), 'draft steps')} at this M"
        else:
            how = "an estimate from the weights it reads, not measured: nothing was drafted at this M yet"
        parts.append(f"a draft step with M = {note['M']} skipped {note['r_draft']:.2f} of a plain step ({how})")
    if note.get("verify_slope") is not None:
        how = {None: "", 0: " (estimated from the prompt's pass: no verification measured yet)"}.get(
            note.get("verify_n"), f" (measured: {_window(note.get('verify_n'), 'verifications')})")
        parts.append(f"verifying k drafts 1 + {note['verify_slope']:.2f}·k plain steps{how}")
    return "; ".join(parts)


def acceptance_text(note: dict) -> str:
    """The acceptance auto priced with: assumed until its draft was tested, then counted."""
    alpha, trials = note["alpha"], note.get("trials")
    if trials is None:                                       # an older trace: it did not say
        return f"acceptance {alpha:.2f}"
    if trials == 0:
        return (f"acceptance {alpha:.2f}, assumed: nothing drafted at M = {note['M']} yet, so a 0.50 prior plus "
                f"{note.get('optimism', 0):.2f} optimism that gets an untried draft tried")
    extra = f", plus {note['optimism']:.2f} optimism while it is new" if note.get("optimism") else ""
    return (f"acceptance {alpha:.2f}, measured: {note.get('accepted', 0)} of {trials} tested draft tokens "
            f"accepted{extra}")


def margin_text(note: dict) -> str:
    m = note.get("margin", 1.05)
    return (f"auto drafts only where a draft is predicted at least {m:.2f}× a plain step's speed, its margin "
            f"against noise")


def prediction_text(note: dict) -> str:
    """'best draft (M = 14, K = 2; acceptance ...) predicted 0.93× a plain step's speed'."""
    if not note or note.get("draft_speed") is None:
        return ""
    return (f"the best draft (M = {note['M']}, K = {note['K']}; {acceptance_text(note)}) was predicted at "
            f"{note['draft_speed']:.2f}× a plain step's speed")


def round_reason(note: dict | None) -> str:
    """One sentence: why auto planned this round as it did."""
    if not note:
        return ""
    reason = note.get("reason")
    if reason in REASONS:
        from clasp_core.auto import AutoPolicy

        text = REASONS[reason].format(n=AutoPolicy.MIN_PLAIN, hold=note.get("hold", 0))
        costs = measured_costs_text(note)
        return text + (f" (so far: {costs})" if costs else "")
    costs, pred = measured_costs_text(note), prediction_text(note)
    verdict = ("so it drafted" if note.get("choice") == "draft"
               else f"so it took a plain step: {margin_text(note)}")
    return f"auto priced with {costs}; {pred}, {verdict}"


def auto_summary(view: RunView | None, device: str) -> str:
    """The status line's note on an auto run: what auto did, with the numbers it decided from."""
    if view is None or not view.config.auto:
        return ""
    rounds = view.rounds
    drafting = [r for r in rounds if r.drafting]
    last = next((r.auto for r in reversed(rounds) if r.auto and r.auto.get("step_ms") is not None), None)
    why = ""
    if last:
        why = f" At the end it priced with {measured_costs_text(last)}"
        pred = prediction_text(last)
        why += f"; {pred}; {margin_text(last)}." if pred else "."
        why += (" (The Timing tab's medians are over all of a run's steps, warm-up included, so they can differ "
                "from auto's.)")
        if last.get("fallbacks"):
            why += f" Drafting measured slower than plain steps {last['fallbacks']}× and auto fell back to plain steps."
    if not drafting:
        margin = (last or {}).get("margin", 1.05)
        return (f"  \n**auto decoded plainly**: on this device ({device}) no draft was predicted at least "
                f"{margin:.2f}× a plain step's speed in any round it priced.{why} Untick *auto* to watch "
                f"{view.source} draft anyway.")
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

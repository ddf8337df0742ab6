"""A speedup and its noise, in the words every view uses.

One run against one vanilla run on a shared machine: a few percent either way can be the machine,
not the method. The noise is read from vanilla's own steps (the same work every step, so their
spread is the machine's): the interquartile range of its step times over their median. A run that
never drafted did vanilla's work, so its difference from vanilla *is* noise and is called that.
"""
from __future__ import annotations

from statistics import median, quantiles

from clasp_core.metrics import speedup

from .state import RunView

NOISE_HOW = ("noise: the spread of vanilla's own step times in this run (interquartile range ÷ median), "
             "the same work every step, so the spread is the machine's")
MIN_STEPS = 4                   # fewer vanilla steps give no spread worth quoting


def step_noise(vanilla: RunView | None) -> float | None:
    """The share a speed moves by on its own here: IQR / median of vanilla's step times (None: too few)."""
    steps = [s.seconds for s in vanilla.steps] if vanilla else []
    if len(steps) < MIN_STEPS or median(steps) <= 0:
        return None
    q1, _, q3 = quantiles(steps, n=4)
    return (q3 - q1) / median(steps)


def never_drafted(view: RunView | None) -> bool:
    """A finished run with no drafting round: every round a plain full-model step, vanilla's own work."""
    return bool(view and view.done and view.method == "clasp" and not any(r.drafting for r in view.rounds))


def measured_speedup(clasp: RunView | None, vanilla: RunView | None) -> float | None:
    if not (clasp and clasp.done and vanilla and vanilla.done):
        return None
    return speedup(clasp.done.tokens_per_s, vanilla.done.tokens_per_s)


def noise_text(vanilla: RunView | None) -> str:
    n = step_noise(vanilla)
    return f"noise ±{100 * n:.0f}%" if n is not None else "noise unknown (too few vanilla steps)"


def no_drafting_text(clasp: RunView, vanilla: RunView) -> str:
    diff = 100 * ((measured_speedup(clasp, vanilla) or 1.0) - 1)
    return (f"no drafting: both sides decoded plainly; the difference ({diff:+.0f}%) is this machine's "
            f"run-to-run noise")


def speedup_text(clasp: RunView | None, vanilla: RunView | None) -> str:
    """'1.12× (noise ±8%)', '0.98× (noise ±8%: within the noise)', or the never-drafted sentence; '…' before
    both runs are done."""
    s = measured_speedup(clasp, vanilla)
    if s is None:
        return "…"
    if never_drafted(clasp):
        return no_drafting_text(clasp, vanilla)
    n = step_noise(vanilla)
    within = ": within the noise" if n is not None and abs(s - 1) <= n else ""
    return f"{s:.2f}× ({noise_text(vanilla)}{within})"

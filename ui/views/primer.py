"""The primer at the top of the page: CLaSp in four plain sentences, with this run's numbers filled in.

Before a run (or for a number the run did not measure) the same sentences say so in place of the
number, so a newcomer reads the idea first and sees it measured once a run is done.
"""
from __future__ import annotations

from clasp_core.costs import Costs

from .costs_view import measured_costs
from .speed import speedup_text
from .state import RunView

NOT_YET = "*not yet measured*"
NOT_DRAFTED = "*not measured, this run drafted nothing*"


def _b(value: str) -> str:
    return f"**{value}**"


def round_sentence(clasp: RunView | None) -> str:
    tau = _b(f"{clasp.done.tau:.2f}") if clasp and clasp.done and clasp.done.rounds else NOT_YET
    source = f"; this run's draft source: {clasp.source}" if clasp and clasp.source not in ("CLaSp", "") else ""
    return ("**A round.** The *draft*, this same model with M of its L layers skipped, guesses up to K next "
            "tokens one step each, and the full model checks them all in one pass, keeps those that match its own "
            f"choice and adds one of its own: 1 to K + 1 tokens a round (τ, their mean, here {tau}{source}).")


def check_sentence(c: Costs | None, never: bool) -> str:
    if c is not None:
        here = (f"here a check of {c.k + 1:.1f} positions cost {_b(f'{c.r_verify:.2f}')} plain steps, "
                f"{c.r_verify * c.step_s * 1e3:.0f} ms against {c.step_s * 1e3:.0f} ms")
    else:
        here = "here " + (NOT_DRAFTED if never else NOT_YET)
    return ("**Why checking is cheap.** On a GPU one token's step is *memory-bound*: its time goes to reading the "
            "weights, read once per pass whether it scores 1 position or 9, so checking k tokens costs about one "
            f"step, more on a CPU where the arithmetic counts too ({here}).")


def pays_sentence(c: Costs | None, never: bool) -> str:
    words = ("**When drafting pays.** When a round's tokens outnumber its cost in plain steps, that is the draft "
             "steps times their cost, plus the check, plus the layer choice (the DP) shared by the LOI rounds that "
             "reuse it: τ > k̄ · r<sub>d</sub> + r<sub>v</sub> + DP ÷ LOI")
    if c is None:
        return words + " (here " + (NOT_DRAFTED if never else NOT_YET) + ")."
    dp = f" + {c.dp:.2f} ÷ {c.loi:.1f}" if c.dp and c.loi else ""
    verdict = "it paid" if c.tau > c.round_cost else "it did not pay"
    return (words + f" (here τ over drafting rounds {_b(f'{c.tau:.2f}')} against {c.k:.2f} · {c.r_draft:.2f} + "
            f"{c.r_verify:.2f}{dp} = {_b(f'{c.round_cost:.2f}')}: {verdict}).")


def skip_sentence(clasp: RunView | None, c: Costs | None, never: bool) -> str:
    here = NOT_DRAFTED if never else NOT_YET
    if c is not None and c.r_draft and clasp is not None:
        m, L = clasp.config.num_skip, clasp.num_layers
        share = f", where its layers alone would be {(L - m) / L:.2f}" if isinstance(m, int) and L else ""
        here = f"M = {m} of L = {L}: {_b(f'{c.r_draft:.2f}')} of a full step{share}"
    elif c is not None:
        here = "this run's drafts were copied, no draft step ran"
    return ("**Why a light draft can cost a full step.** A draft step skips whole layers but still reads every kept "
            "layer and the output layer (the lm_head, large in a small model) and pays a step's fixed work, so "
            f"with few layers skipped it costs nearly a full step, and on a busy machine can measure above one "
            f"(here {here}).")


def primer_md(clasp: RunView | None, vanilla: RunView | None) -> str:
    """The four sentences, and this run's result with its noise once both runs are done."""
    done = bool(clasp and clasp.done and vanilla and vanilla.done)
    c = measured_costs(clasp, vanilla) if done else None
    never = done and c is None
    parts = [round_sentence(clasp if done else None), check_sentence(c, never), pays_sentence(c, never),
             skip_sentence(clasp, c, never)]
    speed = speedup_text(clasp, vanilla)
    result = (f"**This run:** {speed if speed.startswith('no drafting') else f'speedup {speed} against vanilla'}."
              if done else
              "**This run:** *not yet measured*: press **Run**, or load a trace.")
    return "\n\n".join(parts + [result])

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


def round_sentence(clasp: RunView | None, c: Costs | None) -> str:
    tau = _b(f"{clasp.done.tau:.2f}") if clasp and clasp.done and clasp.done.rounds else NOT_YET
    source = ""
    if clasp and clasp.source not in ("CLaSp", ""):
        source = f" (this run's draft source: {clasp.source})"
    return ("**A round.** The *draft* (this same model with M of its L layers skipped) guesses up to K next tokens, "
            "one step each; then the full model checks all of them in one pass, keeps the guesses that match its "
            f"own choice and adds one token of its own, so a round yields 1 to K + 1 tokens{source}. τ, the mean "
            f"tokens per round: {tau} in this run.")


def check_sentence(c: Costs | None, never: bool) -> str:
    if c is not None:
        here = (f"Here a check of {c.k + 1:.1f} positions cost {_b(f'{c.r_verify:.2f}')} plain steps "
                f"({c.r_verify * c.step_s * 1e3:.0f} ms against {c.step_s * 1e3:.0f} ms for one plain step)")
    else:
        here = "Here: " + (NOT_DRAFTED if never else NOT_YET)
    return ("**Why checking is cheap.** On a GPU, making one token is *memory-bound*: most of a step's time goes "
            "to reading the model's weights, and one pass reads them once whether it scores 1 position or 9, so "
            f"checking k tokens costs about one step (on a CPU the arithmetic counts too, so it costs more). {here}.")


def pays_sentence(c: Costs | None, never: bool) -> str:
    words = ("**When drafting pays.** When a round yields more tokens than it costs in plain steps: the draft steps "
             "times their cost, plus the check, plus the layer choice (the DP) spread over the LOI rounds that "
             "share it. In symbols: τ > k̄ · r<sub>d</sub> + r<sub>v</sub> + DP ÷ LOI")
    if c is None:
        return words + "; here " + (NOT_DRAFTED if never else NOT_YET) + "."
    dp = f" + {c.dp:.2f} ÷ {c.loi:.1f}" if c.dp and c.loi else ""
    verdict = "drafting paid" if c.tau > c.round_cost else "drafting did not pay"
    return (words + f"; here τ over drafting rounds {_b(f'{c.tau:.2f}')} against {c.k:.2f} · {c.r_draft:.2f} + "
            f"{c.r_verify:.2f}{dp} = {_b(f'{c.round_cost:.2f}')}: {verdict}.")


def skip_sentence(clasp: RunView | None, c: Costs | None, never: bool) -> str:
    text = ("**Why a light draft can cost a full step.** A draft step skips whole layers but still reads every "
            "kept layer and the output layer (the lm_head, large in a small model) and pays the same fixed work per "
            "step, so skipping M of L layers saves less than M/L; with few layers skipped it costs nearly a full "
            "step, and a busy machine can measure it above one.")
    if c is not None and c.r_draft and clasp is not None:
        m, L = clasp.params.get("num_skip"), clasp.num_layers
        share = f" (its layers alone would be {(L - m) / L:.2f})" if isinstance(m, int) and L else ""
        text += f" Here a draft step with M = {m} of L = {L} cost {_b(f'{c.r_draft:.2f}')} of a full step{share}."
    elif c is None:
        text += " Here: " + (NOT_DRAFTED if never else NOT_YET) + "."
    return text


def primer_md(clasp: RunView | None, vanilla: RunView | None) -> str:
    """The four sentences, and this run's result with its noise once both runs are done."""
    done = bool(clasp and clasp.done and vanilla and vanilla.done)
    c = measured_costs(clasp, vanilla) if done else None
    never = done and c is None
    parts = [round_sentence(clasp if done else None, c), check_sentence(c, never), pays_sentence(c, never),
             skip_sentence(clasp, c, never)]
    speed = speedup_text(clasp, vanilla)
    result = (f"**This run:** {speed if speed.startswith('no drafting') else f'speedup {speed} against vanilla'}."
              if done else
              "**This run:** *not yet measured*: press **Run**, or load a trace.")
    return "\n\n".join(parts + [result])

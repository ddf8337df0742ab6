"""Step-through mode: what happened in one round, in a sentence or two."""
from __future__ import annotations

from clasp_core.costs import Costs

from .auto_view import round_reason
from .state import RunView, is_below_det, is_copied

ACCEPTANCE_RULE = (
    "**The acceptance rule.** Greedy (temperature 0): a drafted token is accepted while it is the full model's "
    "own top choice at that position, whatever its probability. Sampling: a drafted token x is accepted with "
    "probability min(1, p(x)/q(x)) (p: full model, q: draft); on a rejection the full model's token is drawn "
    "from the leftover distribution norm(max(0, p − q)). Either way the output follows the full model exactly.")


def _quote(s: str) -> str:
    return "“" + s.replace("\n", "↵") + "”"


def _plain_reason(view: RunView, r) -> str:
    left = view.config.max_new_tokens - r.start
    if left <= 1:
        return "only one token was left to generate, so there was nothing to draft"
    if view.config.auto:
        return round_reason(r.auto) or ("auto chose a plain step: no draft was predicted faster than a plain step "
                                        "by its margin here")
    return "no draft was planned for this round"


def copy_sentence(r) -> str:
    """How a prompt-lookup round got its draft: no model ran, the context was searched."""
    s = r.lookup
    gram = f" ({_quote(s['ngram_text'])})" if s.get("ngram_text") else ""
    where = "the prompt" if s.get("in_prompt") else "the output so far"
    return (f"No draft model ran: this round's draft was copied from the context (prompt lookup). The last "
            f"{s['n']} token(s){gram} had appeared before, in {where}, so the {len(r.drafted)} token(s) that "
            f"followed them there were proposed: {' '.join(_quote(t) for t in r.drafted_text)}. A copy costs "
            f"nothing to make (the round pays only the full model's check), and it is checked like any draft: "
            f"as a certain guess, q(x) = 1. ")


def cost_sentence(view: RunView, r, costs: Costs | None) -> str:
    """What this round cost against plain steps, and what it would take for drafting to win."""
    if costs is None or not costs.step_s:
        return ""
    dp = next((c.seconds for c in view.choices if c.round == r.index + 1 and c.D), 0.0)
    n = max(1, len(r.emitted))
    parts = [f"draft {r.draft_s * 1e3:.0f} ms"] if r.draft_s > 0 and r.draft_steps else []
    parts.append(f"check {r.verify_s * 1e3:.0f} ms")
    if dp:
        parts.append(f"layer choice {dp * 1e3:.0f} ms")
    need = (f"τ ≥ {costs.break_even_tau:.1f}" + (f" or LOI ≥ {costs.loi_to_win:.0f}"
                                                 if costs.loi_to_win != float("inf") and costs.dp else ""))
    return (f" *Cost:* this round took {' + '.join(parts)} for {n} token(s), against {n * costs.step_s * 1e3:.0f} ms "
            f"for {n} plain step(s). With this run's costs drafting wins at {need} (this run: τ over drafting rounds "
            f"= {costs.tau:.2f}).")


def explain_round(view: RunView | None, index: int, costs: Costs | None = None) -> str:
    """``index``: 0-based position of the round in the run; ``costs``: the run's cost model, if known."""
    if view is None or not view.rounds:
        return "Run a prompt (or load a trace) to step through its rounds."
    index = max(0, min(index, len(view.rounds) - 1))
    r = view.rounds[index]
    lead = f"**Round {r.index + 1} of {len(view.rounds)}.** "
    n_emit = len(r.emitted)
    if not r.drafted:
        if is_below_det(r):
            head = (f"**Below DET**: the draft ran one step ({r.draft_s * 1e3:.0f} ms), but its first guess fell "
                    f"below the confidence threshold DET = {view.config.det:.2f}, so nothing was drafted "
                    f"(a drafting round that produced 0 draft tokens)")
        else:
            head = f"No draft tokens: {_plain_reason(view, r)}"
        if not n_emit:
            return lead + f"{head}; the run had already reached its end."
        return lead + (f"{head}. The full model produced {_quote(r.next_text)} on its own, "
                       f"like vanilla decoding.") + cost_sentence(view, r, costs)
    why = round_reason(r.auto) if view.config.auto else ""
    if why:
        lead += f"*Why:* {why}. "
    if is_copied(r):
        text = lead + copy_sentence(r)
    else:
        skip = f"with {len(r.skip)} of {view.num_layers} layers skipped ({', '.join(map(str, r.skip))})"
        text = lead + (f"The draft model — the same model {skip} — proposed {len(r.drafted)} token(s): "
                       f"{' '.join(_quote(t) for t in r.drafted_text)}. ")
    cut = n_emit <= r.accepted                # the run ended (EOS or token limit) inside this round
    if r.accepted == len(r.drafted):
        text += "The full model checked them all in one pass and agreed with every one"
        if cut:
            text += (f"; the run ended there, so {n_emit} token(s) were added and the full model's extra token "
                     f"was not used.")
        else:
            text += (f", then added the bonus token {_quote(r.next_text)}: {n_emit} tokens for one "
                     f"full-model pass.")
    else:
        bad = r.drafted_text[r.accepted]
        text += (f"The full model accepted {r.accepted}, rejected {_quote(bad)} "
                 f"(draft q = {r.draft_probs[r.accepted]:.2f}, full p = {r.target_probs[r.accepted]:.2f})")
        if cut:
            text += f"; the run ended there, so {n_emit} token(s) were added."
        else:
            text += (f" and put its own {_quote(r.next_text)} there: {n_emit} token(s) for one full-model pass. "
                     f"The rest of the draft was discarded, and so were the cache entries written for it "
                     f"(the cache is \"rolled back\" to the last accepted token).")
    choice = next((c for c in view.choices if c.round == r.index + 1), None)
    if choice is not None and choice.D:
        text += (f" Afterwards the layer DP re-chose the skip set from the last accepted token "
                 f"({choice.seconds * 1e3:.0f} ms).")
    return text + cost_sentence(view, r, costs)

"""Step-through mode: what happened in one round, in a sentence or two."""
from __future__ import annotations

from .state import RunView


def _quote(s: str) -> str:
    return "“" + s.replace("\n", "↵") + "”"


def explain_round(view: RunView | None, index: int) -> str:
    if view is None or not view.rounds:
        return "Run a prompt (or load a trace) to step through its rounds."
    index = max(0, min(index, len(view.rounds) - 1))
    r = view.rounds[index]
    lead = f"**Round {r.index}.** "
    if not r.drafted:
        why = ("the draft's first guess was below the confidence threshold DET" if r.skip else
               "this round drafted nothing (auto chose a plain step, or one token was left to generate)")
        return lead + (f"No draft tokens: {why}, so the full model produced {_quote(r.next_text)} on its own, "
                       f"like vanilla decoding.")
    skip = f"with {len(r.skip)} of {view.num_layers} layers skipped ({', '.join(map(str, r.skip))})"
    text = lead + f"The draft model — the same model {skip} — proposed {len(r.drafted)} token(s): " \
                  f"{' '.join(_quote(t) for t in r.drafted_text)}. "
    if r.accepted == len(r.drafted):
        text += (f"The full model checked them all in one pass and agreed with every one, then added the bonus "
                 f"token {_quote(r.next_text)}: {r.accepted + 1} tokens for one full-model pass.")
    else:
        bad = r.drafted_text[r.accepted]
        text += (f"The full model accepted {r.accepted}, rejected {_quote(bad)} "
                 f"(draft q = {r.draft_probs[r.accepted]:.2f}, full p = {r.target_probs[r.accepted]:.2f}) and put "
                 f"its own {_quote(r.next_text)} there; the rest of the draft was discarded and the cache rolled back.")
    choice = next((c for c in view.choices if c.round == r.index + 1), None)
    if choice is not None:
        text += f" Afterwards the layer DP re-chose the skip set from the last accepted token ({choice.seconds * 1e3:.0f} ms)."
    return text

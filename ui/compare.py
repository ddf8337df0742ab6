"""Ways of choosing the skipped layers, compared on the same prompt from the runs the visitor made."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from clasp_core.metrics import acceptance_rate

from .palette import ACCEPTED, SKIPPED, styled
from .state import RunState

# value -> label of the app's selector; the values are the engine's (and the bench's) strategy names
STRATEGIES = {
    "clasp": "CLaSp: the layer DP, re-run every LOI rounds",
    "clasp-once": "DP once, on the prompt's last token",
    "static": "static: one set per model and M, found offline",
    "early-exit": "early exit: skip the last M layers",
    "random": "random: M layers drawn from the seed",
    "lookup": "prompt lookup: copy what followed the last n-gram in the context",
    "clasp+lookup": "CLaSp + lookup: copy where an n-gram matches, else skip layers",
}
STRATEGY_HELP = (
    "**Draft sources: ways to choose the layers the draft skips, or copies from the context.** All use the same draft-and-verify loop, the same M, K and "
    "DET, and all are lossless (the full model checks every token); only the draft's quality differs. "
    "*CLaSp* re-runs the layer DP on the newest hidden states every LOI rounds, so the skip set follows the "
    "context. *DP once* keeps the set the DP picked from the prompt (the paper's LOI ablation). *Static* is the "
    "Self-SD idea: one set per model, searched offline on calibration prompts for draft agreement, then reused. "
    "*Early exit* drafts with the first L − M layers (LayerSkip's draft, without its training). *Random* is the "
    "floor. *Prompt lookup* runs no draft model: when the context's last 3, 2 or 1 tokens appeared before, it "
    "proposes what followed them there, for free (the round costs only the check); where nothing matches the "
    "round is a plain step. *CLaSp + lookup* copies where an n-gram matches and drafts with CLaSp's skipped "
    "layers elsewhere; with auto on it takes plain steps where neither pays. "
    "Run the same prompt under each and compare τ (tokens per round) and the acceptance rate below.")
COLUMNS = ["strategy", "auto", "M", "K", "DET", "LOI", "τ", "acceptance", "drafted", "tokens/s", "× vanilla"]
MAX_HISTORY = 40


def run_summary(state: RunState) -> dict | None:
    """One comparison row from a finished request (CLaSp run + its vanilla baseline)."""
    c, v = state.clasp, state.vanilla
    if not (c and c.done and v and v.done) or c.done.stop_reason == "stopped":
        return None
    p, d = c.params, c.done
    return {"prompt": c.prefill.prompt_text, "strategy": p.get("strategy", "clasp"), "auto": bool(p.get("auto")),
            "M": p.get("num_skip"), "K": p.get("draft_len"), "DET": p.get("det"), "LOI": p.get("loi"),
            "τ": round(d.tau, 2), "acceptance": round(acceptance_rate(d.accepted, d.drafted), 2) if d.drafted else None,
            "drafted": d.drafted, "tokens/s": round(d.tokens_per_s, 1),
            "× vanilla": round(d.tokens_per_s / v.done.tokens_per_s, 2) if v.done.tokens_per_s else None}


def remember(history: list | None, state: RunState) -> list:
    row = run_summary(state)
    history = list(history or [])
    if row is not None:
        history.append(row)
    return history[-MAX_HISTORY:]


def same_prompt(history: list | None, state: RunState | None) -> list[dict]:
    prompt = state.clasp.prefill.prompt_text if state and state.clasp and state.clasp.prefill else None
    return [h for h in history or [] if h["prompt"] == prompt]


def compare_dataframe(history: list | None, state: RunState | None) -> pd.DataFrame:
    rows = same_prompt(history, state)
    return pd.DataFrame([{k: r[k] for k in COLUMNS} for r in rows], columns=COLUMNS)


def compare_figure(history: list | None, state: RunState | None) -> go.Figure:
    rows = same_prompt(history, state)
    fig = go.Figure()
    if rows:
        names = [f"{i + 1}. {r['strategy']}" + (" (auto)" if r["auto"] else "") + f" M={r['M']}"
                 for i, r in enumerate(rows)]
        fig.add_trace(go.Bar(x=names, y=[r["τ"] for r in rows], name="τ (tokens per round)",
                             marker_color=SKIPPED, offsetgroup="tau"))
        fig.add_trace(go.Bar(x=names, y=[r["acceptance"] or 0 for r in rows], name="acceptance rate",
                             marker_color=ACCEPTED, yaxis="y2", offsetgroup="acceptance"))
    return styled(fig, title="This prompt under each layer choice you ran", barmode="group", height=340,
                  yaxis=dict(title="τ"), yaxis2=dict(title="acceptance", overlaying="y", side="right",
                                                     range=[0, 1.05], showgrid=False),
                  legend=dict(orientation="h", y=-0.25), margin=dict(l=50, r=50, t=50, b=60))

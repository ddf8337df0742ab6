"""Ways of choosing the skipped layers, compared on the same prompt from the runs the visitor made."""
from __future__ import annotations

import pandas as pd

from clasp_core.metrics import acceptance_rate, speedup
from clasp_core.strategies import DP_STRATEGIES, LOOKUP_STRATEGIES, REGISTRY, registered, short_name

from .figure import Figure
from .palette import ACCEPTED, SKIPPED, styled
from .speed import never_drafted, noise_text
from .state import RunState

HELP_INTRO = (
    "**Draft sources: ways to choose the layers the draft skips, or copies from the context.** All use the same "
    "draft-and-verify loop, the same M, K and DET, and all are lossless (the full model checks every token); only "
    "the draft's quality differs.")
HELP_OUTRO = (
    "Run the same prompt under each (or press *Run all* in the Compare tab) and compare τ (tokens "
    "per round) and the acceptance rate in the Compare tab's table and chart.")


def strategy_choices() -> list[tuple[str, str]]:
    """(label, value) of the app's selector, one per registered draft source; the values are the engine's
    (and the bench's) strategy names."""
    return [(s.label, s.name) for s in registered()]


def strategy_help() -> str:
    """The page's help on draft sources: what they share, one sentence each, how to compare them."""
    return " ".join([HELP_INTRO, *(s.help for s in registered()), HELP_OUTRO])


COLUMNS = ["prompt", "settings", "strategy", "auto", "M", "K", "DET", "LOI", "τ", "acceptance", "drafted",
           "tokens/s", "× vanilla", "noise", "note"]
MAX_HISTORY = 40
FEW_DRAFTS = 20           # a row resting on fewer draft tokens than this is marked: its τ and acceptance are noise


def run_summary(state: RunState) -> dict | None:
    """One comparison row from a finished request (CLaSp run + its vanilla baseline)."""
    c, v = state.clasp, state.vanilla
    if not (c and c.done and v and v.done) or c.done.stop_reason == "stopped":
        return None
    p, d = c.config, c.done
    return {"prompt": c.prefill.prompt_text, "temperature": p.temperature,
            "strategy": p.strategy, "auto": bool(p.auto),
            "M": p.num_skip, "K": p.draft_len, "DET": p.det, "LOI": loi_shown(c),
            "τ": round(d.tau, 2), "acceptance": round(acceptance_rate(d.accepted, d.drafted), 2) if d.drafted else None,
            "drafted": d.drafted, "tokens/s": round(d.tokens_per_s, 1),
            "× vanilla": round(speedup(d.tokens_per_s, v.done.tokens_per_s), 2) if v.done.tokens_per_s else None,
            "noise": noise_text(v).removeprefix("noise "), "never drafted": never_drafted(c),
            # settings that change speed besides the knobs above: they group the rows (``settings``)
            "loi_setting": p.loi, "model": c.prefill.model, "dtype": c.prefill.dtype,
            "max_new": p.max_new_tokens, "top_p": p.top_p}


def loi_shown(view) -> str:
    """LOI as the run had it: the setting for a fixed CLaSp run; for auto, the drafting rounds per DP run
    it measured (it stretches LOI); "once" for a choice whose DP runs once; "–" for choices that run no DP."""
    p, d = view.config, view.done
    strategy = p.strategy
    if strategy not in DP_STRATEGIES:
        return "–"
    if dp_once(strategy):                            # the DP's first choice kept for the whole run
        return "once"
    if p.auto:
        drafting = sum(r.drafting for r in view.rounds)
        return f"{drafting / d.dp_calls:.0f} (auto)" if d and d.dp_calls else "– (no DP ran)"
    return str(p.loi)


def settings(row: dict) -> str:
    """What must be equal for two rows to be compared: every setting that changes speed (auto, M, K, DET unless
    auto, LOI, temperature and top-p, the model and its dtype, the token limit)."""
    det = "–" if row["auto"] else row["DET"]
    t = row.get("temperature", 0.0)
    loi = row.get("loi_setting", row["LOI"])
    text = f"{'auto' if row['auto'] else 'fixed'}, M {row['M']}, K {row['K']}, DET {det}, LOI {loi}"
    if t:
        text += f", T {t}" + (f", top-p {row['top_p']}" if row.get("top_p") not in (None, 1.0) else "")
    extra = [str(row[k]) for k in ("model", "dtype") if row.get(k)]
    extra += [f"{row['max_new']} tokens"] if row.get("max_new") else []
    return text + (f" ({', '.join(extra)})" if extra else "")


def remember(history: list | None, state: RunState) -> list:
    row = run_summary(state)
    history = list(history or [])
    if row is not None:
        history.append(row)
    return history[-MAX_HISTORY:]


def current_prompt(history: list | None, state: RunState | None) -> str | None:
    if state and state.clasp and state.clasp.prefill:
        return state.clasp.prefill.prompt_text
    return history[-1]["prompt"] if history else None


def same_prompt(history: list | None, state: RunState | None) -> list[dict]:
    prompt = current_prompt(history, state)
    return [h for h in history or [] if h["prompt"] == prompt]


def same_settings(history: list | None, state: RunState | None) -> list[dict]:
    """The rows a verdict may compare: this prompt, and the settings of its latest run."""
    rows = same_prompt(history, state)
    if not rows:
        return []
    key = settings(rows[-1])
    return [r for r in rows if settings(r) == key]


def _short(prompt: str, n: int = 48) -> str:
    """The user's words from a chat-templated prompt, cut to n characters."""
    text = prompt
    for mark in ("<|im_start|>user\n", "[INST]", "<|user|>"):
        if mark in text:
            text = text.split(mark, 1)[1]
    text = text.split("<|im_end|>", 1)[0].strip().replace("\n", " ")
    return text if len(text) <= n else text[:n - 1] + "…"


def _note(r: dict) -> str:
    if r.get("never drafted"):
        return "never drafted: its × vanilla is noise"
    return f"few drafts ({r['drafted']}): noisy" if r["drafted"] < FEW_DRAFTS else ""


def fixed_set(r: dict) -> bool:
    """The run kept one skip set (chosen offline, by rule, at random, or by the DP once on the prompt)."""
    name = r["strategy"]
    return name not in LOOKUP_STRATEGIES and (name not in DP_STRATEGIES or dp_once(name))


def dp_once(name: str) -> bool:
    """The source runs the layer DP once, on the prompt, and keeps its set for the whole run."""
    return name in REGISTRY and not REGISTRY[name](0).due(1, 1)


def compare_dataframe(history: list | None, state: RunState | None) -> pd.DataFrame:
    """Every remembered run, grouped by prompt (this prompt's runs last, next to the chart), each row with
    its settings."""
    prompt = current_prompt(history, state)
    order = {p: i for i, p in enumerate(dict.fromkeys(r["prompt"] for r in history or []))}
    rows = sorted(history or [], key=lambda r: (r["prompt"] == prompt, order[r["prompt"]]))
    data = [{**{k: r.get(k) for k in COLUMNS}, "prompt": _short(r["prompt"]), "settings": settings(r),
             "note": _note(r)} for r in rows]
    return pd.DataFrame(data, columns=COLUMNS)


def _label(r: dict) -> str:
    """The draft source's short name, as every view calls it."""
    return short_name(r["strategy"])


def conclusion(history: list | None, state: RunState | None) -> str:
    """One line computed from the comparable rows: which choice drafts best, which is fastest, what the DP buys."""
    rows = same_settings(history, state)
    by = {}
    for r in rows:                                   # the latest run of each strategy
        by[r["strategy"]] = r
    if len(by) < 2:
        return ("**Verdict:** run at least two draft sources on this prompt with the same settings (M, K, DET, LOI, "
                "model, dtype, token limit) for a verdict: pick one below and press *Run this source*, or press "
                "*Run all*.")
    rows = list(by.values())
    best_tau = max(rows, key=lambda r: r["τ"])
    fastest = max(rows, key=lambda r: r["× vanilla"] or 0)
    text = (f"**Verdict** (this prompt, {settings(rows[0])}, {len(rows)} draft sources): "
            f"{_label(best_tau)} drafts best (τ {best_tau['τ']:.2f}"
            + (f", acceptance {best_tau['acceptance']:.2f}" if best_tau["acceptance"] is not None else "") + "); "
            f"{_label(fastest)} is fastest ({fastest['× vanilla']:.2f}× vanilla"
            + (f", noise {fastest['noise']}" if fastest.get("noise") else "") + ").")
    clasp = by.get("clasp")
    fixed = [r for r in rows if fixed_set(r)]
    if clasp and fixed:
        best_fixed = max(fixed, key=lambda r: r["τ"])
        gap = clasp["τ"] - best_fixed["τ"]
        if gap > 0.05:
            text += (f" Choosing the layers in context buys τ +{gap:.2f} over the best fixed set "
                     f"({_label(best_fixed)}).")
        else:
            text += (f" {_label(best_fixed)} drafts as well as CLaSp (τ {best_fixed['τ']:.2f} against "
                     f"{clasp['τ']:.2f}) without the DP's cost.")
    few = [_label(r) for r in rows if r["drafted"] < FEW_DRAFTS]
    if few:
        text += f" Few drafts behind {', '.join(few)} (under {FEW_DRAFTS}): read those rows as noise."
    others = len(same_prompt(history, state)) - len(same_settings(history, state))
    if others:
        text += f" {others} run(s) of this prompt with other settings are left out of the verdict."
    return text


def compare_figure(history: list | None, state: RunState | None) -> Figure:
    rows = same_settings(history, state)
    fig = Figure()
    if rows:
        names = [f"{i + 1}. {_label(r)}" + (" (few drafts)" if r["drafted"] < FEW_DRAFTS else "")
                 for i, r in enumerate(rows)]
        fig.add_trace("bar", x=names, y=[r["τ"] for r in rows], name="τ (tokens per round)",
                      marker=dict(color=SKIPPED), offsetgroup="tau")
        fig.add_trace("bar", x=names, y=[r["acceptance"] or 0 for r in rows], name="acceptance rate",
                      marker=dict(color=ACCEPTED), yaxis="y2", offsetgroup="acceptance")
    title = "This prompt, same settings" if rows else "Layer choices on this prompt"
    return styled(fig, title=title, barmode="group", height=340,
                  yaxis=dict(title="τ"), yaxis2=dict(title="acceptance", overlaying="y", side="right",
                                                     range=[0, 1.05], showgrid=False),
                  legend=dict(orientation="h", y=-0.25), margin=dict(l=50, r=50, t=50, b=60))

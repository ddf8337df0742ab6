"""CLaSp against vanilla, measured side by side: numbers, the lossless check, a two-lane timeline."""
from __future__ import annotations

import html

from clasp_core.metrics import tau_drafting
from clasp_core.ties import Divergence, classify, run_tops

from .figure import Figure
from .palette import BONUS, DP, PLAIN, VANILLA, VERIFY, styled
from .speed import NOISE_HOW, never_drafted, no_drafting_text, speedup_text
from .state import RunView

SEGMENT_COLOURS = {"prefill": PLAIN, "layer DP": DP, "draft": BONUS, "verify": VERIFY, "plain step": VANILLA}


def segments(view: RunView) -> list[tuple[str, float, float]]:
    """(kind, start s, length s) in the order the engine spent the time."""
    out, t = [], 0.0
    if view.prefill is None:
        return out

    def put(kind, s):
        nonlocal t
        out.append((kind, t, s))
        t += s

    put("prefill", view.prefill.seconds)
    # replay in event order: the initial choice, then rounds, each followed by the choice it triggered
    choices = {c.round: c for c in view.choices}
    if 0 in choices:
        put("layer DP", choices[0].seconds)
    for r in view.rounds:
        if r.plain:                                      # no draft ran: one full-model step
            put("plain step", r.draft_s + r.verify_s)
        else:
            if r.draft_s > 0:
                put("draft", r.draft_s)
            put("verify", r.verify_s)
        if r.index + 1 in choices:
            put("layer DP", choices[r.index + 1].seconds)
    for s in view.steps:
        put("plain step", s.seconds)
    return out


def timeline_figure(clasp: RunView | None, vanilla: RunView | None) -> Figure:
    fig = Figure()
    lanes = [(clasp.source if clasp else "CLaSp", clasp), ("vanilla", vanilla)]
    seen = set()
    for lane, view in lanes:
        if view is None:
            continue
        by_kind: dict[str, tuple[list, list]] = {}
        for kind, start, length in segments(view):
            b, w = by_kind.setdefault(kind, ([], []))
            b.append(start)
            w.append(length)
        for kind, (b, w) in by_kind.items():
            fig.add_trace("bar", y=[lane] * len(b), x=w, base=b, orientation="h", name=kind,
                          marker=dict(color=SEGMENT_COLOURS[kind], line=dict(width=0.5, color="white")),
                          showlegend=kind not in seen, legendgroup=kind,
                          hovertemplate=f"{kind}: %{{x:.4f}} s at %{{base:.3f}} s<extra>{lane}</extra>")
            seen.add(kind)
    return styled(fig, barmode="overlay", title="Where the time went", xaxis_title="seconds", height=260,
                  margin=dict(l=70, r=20, t=60, b=40),
                  legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))


def lossless_state(clasp: RunView | None, vanilla: RunView | None) -> tuple[str, str]:
    """('ok' | 'mismatch' | 'sampled' | 'pending', message)."""
    if not (clasp and clasp.done and vanilla and vanilla.done):
        return "pending", "Lossless check: waiting for both runs."
    name = clasp.source
    if clasp.prefill.config.temperature > 0:
        return "sampled", (f"Temperature > 0: outputs are samples, so they may differ; {name} keeps the target "
                           "distribution (speculative sampling), which a single run cannot show.")
    a, b = clasp.done.output_ids, vanilla.done.output_ids
    if a == b:
        return "ok", f"Lossless: {name}'s {len(a)} tokens are identical to vanilla greedy decoding."
    d = parting(clasp, vanilla)
    if d is not None and d.kind == "tie":
        apart = "were equal" if d.margin == 0 else f"were {d.margin:.3f} apart"
        return "tie", (f"Lossless, up to rounding: {name} and vanilla part at token #{d.position}, where the full "
                       f"model's two best candidates {apart}, within {d.dtype} rounding. Both continuations are "
                       f"valid greedy outputs; in float32 (Sampling and model → dtype) they agree.")
    if d is not None and d.kind == "error" and d.margin is not None:
        return "error", (f"Error: {name} and vanilla part at token #{d.position}, and rounding does not explain it: "
                         f"{d.reason} (top-2 margin {d.margin:.3f}, {d.dtype} tolerance {d.tolerance:.3g}). "
                         f"This is a bug in the engine.")
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return "mismatch", f"Warning: {name} and vanilla differ from token {first} on."


TAU_ALL = "τ: tokens per round, all rounds"
TAU_DRAFTING = "τ over drafting rounds"
TAU_NOTE = ("Two τ, named apart: <b>τ</b> counts every round, plain full-model steps included (one token "
            "each); <b>τ over drafting rounds</b> counts only rounds that ran a draft step, the rounds the cost "
            "model prices. They are equal when every round drafted.")
def parting(clasp: RunView | None, vanilla: RunView | None) -> Divergence | None:
    """Where and why CLaSp's greedy output leaves vanilla's (clasp_core.ties), once both are done;
    None while running, when sampling, or when the outputs are identical."""
    if not (clasp and clasp.done and vanilla and vanilla.done) or clasp.config.temperature > 0:
        return None
    if clasp.done.output_ids == vanilla.done.output_ids:
        return None
    ids, tops = run_tops(_events(clasp))
    ref, ref_tops = run_tops(_events(vanilla))
    return classify(ids, tops, ref, clasp.prefill.dtype, ref_tops)


def _events(view: RunView) -> list:
    return [view.prefill, *view.rounds, *view.steps, view.done]


def timing_html(clasp: RunView | None, vanilla: RunView | None) -> str:
    def cell(view, f):
        return f(view) if view and view.done else "…"

    c, v = clasp, vanilla

    def drafting(view):
        return [r for r in view.rounds if r.drafting]

    rows = [
        ("total time", lambda w: f"{w.done.wall_s:.2f} s"),
        ("new tokens", lambda w: f"{w.done.new_tokens}"),
        ("tokens / s", lambda w: f"{w.done.tokens_per_s:.1f}"),
        (TAU_ALL, lambda w: f"{w.done.tau:.2f}" if w.done.rounds else "–"),
        (TAU_DRAFTING, lambda w: f"{tau_drafting(w.rounds):.2f}" if drafting(w) else "–"),
        ("drafting rounds (ran a draft step)", lambda w: f"{len(drafting(w))} of {w.done.rounds}" if w.done.rounds
         else "–"),
        ("draft tokens proposed / accepted", lambda w: f"{w.done.drafted} / {w.done.accepted}" if w.done.rounds
         else "–"),
        ("layer DP share", lambda w: f"{100 * w.done.dp_s / w.done.wall_s:.1f}% ({w.done.dp_calls} "
                                     f"run{'s' if w.done.dp_calls > 1 else ''})" if w.done.dp_calls else "–"),
    ]
    body = "".join(f"<tr><th>{html.escape(name)}</th><td>{cell(c, f)}</td><td>{cell(v, f)}</td></tr>"
                   for name, f in rows)
    state, msg = lossless_state(c, v)
    return (f'<div class="timing">{speed_html(c, v)}'
            f'<table class="timing-table"><tr><th></th><th>{html.escape(c.source if c else "CLaSp")}</th>'
            f'<th>vanilla</th></tr>{body}</table>'
            f'<p class="note">{TAU_NOTE}</p>'
            f'<div class="lossless lossless-{state}">{html.escape(msg)}</div></div>')


def speed_html(clasp: RunView | None, vanilla: RunView | None) -> str:
    """The Timing tab's headline: the speedup with its noise (and how the noise is read), or, for a run
    that never drafted, that its difference from vanilla is noise."""
    text = speedup_text(clasp, vanilla)
    if never_drafted(clasp) or text == "…":
        return f'<div class="speedup">{html.escape(text if text != "…" else "speedup …")}</div>'
    value, _, rest = text.partition(" ")
    return (f'<div class="speedup">speedup <b>{value}</b> {html.escape(rest)}</div>'
            f'<p class="note">{html.escape(NOISE_HOW)}.</p>')


def summary_html(clasp: RunView | None, vanilla: RunView | None) -> str:
    """One line for the token view: both speeds, the speedup, tau and the lossless mark."""
    if not (clasp and clasp.done):
        return ""
    c = clasp.done
    parts = [f"{html.escape(clasp.source)} <b>{c.tokens_per_s:.1f}</b> tok/s",
             f"τ <b>{c.tau:.2f}</b>" if c.rounds else ""]
    if vanilla and vanilla.done and vanilla.done.tokens_per_s > 0:
        v = vanilla.done
        parts.append(f"vanilla <b>{v.tokens_per_s:.1f}</b> tok/s")
        if never_drafted(clasp):
            parts.append(html.escape(no_drafting_text(clasp, vanilla)))
        else:
            value, _, rest = speedup_text(clasp, vanilla).partition(" ")
            parts.append(f"speedup <b>{value}</b> {html.escape(rest)}")
    state, msg = lossless_state(clasp, vanilla)
    mark = {"ok": "lossless", "mismatch": "outputs differ", "sampled": "sampled", "pending": "",
            "tie": "lossless up to rounding", "error": "error: outputs differ"}[state]
    badge = f' <span class="lossless lossless-{state} badge" title="{html.escape(msg, quote=True)}">{mark}</span>' \
        if mark else ""
    return '<div class="summary">' + " · ".join(p for p in parts if p) + badge + "</div>"

"""Why this speedup: the cost model (clasp_core.costs) filled in from the run's own measurements,
beside the same formula for paper-scale models (a labelled projection)."""
from __future__ import annotations

import html
import math
from statistics import median

from clasp_core import costs as cm
from clasp_core.costs import PAPER_MODELS, Costs, outlier_rounds, plain_step_s, projection, run_costs
from clasp_core.metrics import speedup

from .speed import NOISE_HOW, no_drafting_text, noise_text
from .state import RunView

FORMULA = "speedup = τ / (k̄·r<sub>d</sub> + r<sub>v</sub>(k̄) + DP / LOI)"


def measured_costs(clasp: RunView | None, vanilla: RunView | None) -> Costs | None:
    if not (clasp and vanilla and vanilla.steps):
        return None
    return run_costs(clasp.rounds, clasp.choices, plain_step_s([s.seconds for s in vanilla.steps]))


def _x(v: float) -> str:
    return "∞" if math.isinf(v) else f"{v:.2f}"


def cost_html(clasp: RunView | None, vanilla: RunView | None) -> str:
    if not (clasp and clasp.done and vanilla and vanilla.done):
        return '<div class="costs">The cost model appears when both runs have finished.</div>'
    c = measured_costs(clasp, vanilla)
    measured = speedup(clasp.done.tokens_per_s, vanilla.done.tokens_per_s) or 0.0
    if c is None:
        return f'<div class="costs">{never_drafted(clasp, vanilla, measured)}</div>'
    slow = outlier_rounds(clasp.rounds)
    ms = c.step_s * 1e3
    rows = [
        ("one full-model step", f"{ms:.1f} ms", f"the median of all {len(vanilla.steps)} of vanilla's steps: the "
                                                 f"unit of everything below"),
        ("r<sub>d</sub>: one draft step", f"{c.r_draft:.2f}", f"{c.r_draft * ms:.1f} ms with the skipped layers"),
        ("k̄: draft steps per drafting round", f"{c.k:.2f}", "mean over rounds that ran a draft step (a step "
                                                              "whose guess fell below DET counts)"),
        ("r<sub>v</sub>(k̄): one verification", f"{c.r_verify:.2f}", f"{c.r_verify * ms:.1f} ms for k̄ + 1 positions"),
        ("DP: one run of the layer DP", f"{c.dp:.2f}", f"{c.dp * ms:.1f} ms" if c.dp else "no DP in this run"),
        ("LOI: rounds per DP run", f"{c.loi:.1f}" if c.loi else "–", ""),
        ("τ over drafting rounds", f"{c.tau:.2f}", "accepted drafts + the full model's token, per drafting round "
                                                  "(the Timing table's τ also counts plain steps)"),
        ("<b>predicted speedup</b>", f"<b>{c.speedup:.2f}×</b>", f"{c.tau:.2f} / {c.round_cost:.2f}"),
        ("<b>measured speedup</b>", f"<b>{measured:.2f}×</b>", f"tokens/s against vanilla (prefill and plain "
                                                              f"rounds included); {noise_text(vanilla)}"),
        ("break-even τ on this device", _x(c.break_even_tau), "drafting pays above it"),
        ("LOI needed at this τ", _x(c.loi_to_win), "∞: even without the DP, τ is too low"),
    ]
    body = "".join(f"<tr><th>{a}</th><td>{b}</td><td class='note'>{n}</td></tr>" for a, b, n in rows)
    return (
        f'<div class="costs"><p class="formula">{FORMULA}</p>'
        f'<table class="timing-table"><tr><th>this run, measured</th><th>value</th><th></th></tr>{body}</table>'
        '<p class="note">Predicted counts drafting rounds only; the measured speedup also pays the prefill and any '
        'plain rounds, so it sits between the prediction and 1×.'
        + (f' {len(slow)} round(s) far slower than the others of their kind (marked in the Rounds tab, e.g. '
           f'warm-up) are left out of the terms.' if slow else '') + '</p>'
        + projection_html() +
        f'<p class="note">Reading the tables together: on this device a verification of k̄ + 1 positions costs '
        f'{c.r_verify:.2f} steps and a DP run {c.dp:.2f}; and a small model\'s draft agrees less often (τ over '
        f'drafting rounds {c.tau:.2f} here against the paper\'s 3.7–7.2).</p></div>')


def _span(costs: list[Costs]) -> str:
    return "–".join(f"{c.speedup:.2f}×" for c in costs)


def projection_html() -> str:
    """The cost model for the paper's models: with a memory-bound estimate of each term, and with the costs
    measured on an H200 for shapes like theirs; both at the paper's τ (not measured here), beside the paper's
    own measured speedup, and one sentence on why that sits where it does."""
    rows, above = [], []
    for m in PAPER_MODELS:
        shape = cm.H200_SHAPES.get(m.name)
        est = [_span([projection(m, t, loi=loi) for t in m.tau]) for loi in (1, 128)]
        meas = [_span([cm.measured_projection(shape, t, loi) for t in m.tau]) if shape else "–" for loi in (1, 128)]
        rows.append(f"<tr><th>{html.escape(m.name)} (L = {m.layers})</th><td>{m.tau[0]}–{m.tau[1]}</td>"
                    f"<td>{est[0]}</td><td>{est[1]}</td><td>{meas[0]}</td><td>{meas[1]}</td>"
                    f"<td>{m.speedup:.2f}×</td></tr>")
        best = max([projection(m, m.tau[1], loi=128).speedup] +
                   ([cm.measured_projection(shape, m.tau[1], 128).speedup] if shape else []))
        if m.speedup > best:
            above.append(f"{m.speedup:.2f}× for {m.name}")
    shapes = "; ".join(f"{name} as {s.shape}: a draft step {s.r_draft:.2f}, a verification of 9 tokens "
                       f"{s.r_verify:.2f}, one DP {s.dp:.1f} full steps" for name, s in cm.H200_SHAPES.items())
    why = ""
    if above:
        why = (f'<p class="note">Why the paper\'s {" and ".join(above)} {"sits" if len(above) == 1 else "sit"} '
               'above both projections at LOI 128: the paper measured it end to end against its own baseline '
               '(Spec-Bench\'s vanilla decoding on '
               'A800s, where its DP took 0.14 s, about 4.8% of the time), and the paper does not give its per-step '
               'costs, so the gap cannot be split term by term; these projections also charge k̄ = τ draft steps '
               'a round, one more than a round that accepts every draft needs.</p>')
    return (
        '<p><b>Projection</b> (not measured: the τ is the paper\'s, Table 1, T = 0): the same formula for the '
        'paper\'s models at batch 1 on a GPU, with k̄ = τ. <i>Memory-bound estimate</i>: each term priced by the '
        'weights it reads (a draft step the lm_head and the L − M kept layers at M = 0.45·L, a verification about '
        'one step, the DP about one step). <i>H200-measured costs</i>: the terms measured on an H200 for shapes '
        f'like the paper\'s (BENCHMARKS.md, GPU shape study; {html.escape(shapes)}). There the DP costs 5–6 '
        'steps, not one: its layer calls run eagerly and wait on kernel launches, while the steps are '
        'CUDA-graphed.</p>'
        '<table class="timing-table"><tr><th>model</th><th>paper τ</th><th>estimate, LOI 1</th>'
        '<th>estimate, LOI 128</th><th>H200 costs, LOI 1</th><th>H200 costs, LOI 128</th>'
        f'<th>paper, measured</th></tr>{"".join(rows)}</table>{why}')


def never_drafted(clasp: RunView, vanilla: RunView, measured: float) -> str:
    """A run of plain steps only: its difference from vanilla is noise; say so, then where it went, in numbers
    (each median names the steps it is taken over)."""
    c, v = clasp.done, vanilla.done
    steps = [r.verify_s + r.draft_s for r in clasp.rounds]
    own, base = (median(steps) if steps else 0.0), plain_step_s([s.seconds for s in vanilla.steps])
    bookkeeping = c.decode_s - sum(steps)
    return (f"<b>{html.escape(no_drafting_text(clasp, vanilla))}</b> ({html.escape(noise_text(vanilla))}; "
            f"{html.escape(NOISE_HOW)}). Every round was a plain full-model step, the same work as vanilla's; "
            f"it measured {measured:.2f}× vanilla. Where the difference went: the median of all "
            f"{len(steps)} of its steps took {own * 1e3:.1f} ms against {base * 1e3:.1f} ms for the median of all "
            f"{len(vanilla.steps)} of vanilla's, its prefill {c.prefill_s * 1e3:.0f} ms against "
            f"{v.prefill_s * 1e3:.0f} ms, and {max(0.0, bookkeeping) * 1e3:.0f} ms went between the steps "
            f"(planning each round, building its event). On a shared machine the first two move with the "
            f"background load.")

"""Why this speedup: the cost model (clasp_core.costs) filled in from the run's own measurements,
beside the same formula for paper-scale models (a labelled projection)."""
from __future__ import annotations

import html
import math
from statistics import median

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
    proj = []
    for m in PAPER_MODELS:
        lo, hi = m.tau
        cells = [f"{projection(m, t, loi=loi).speedup:.2f}×" for loi in (1, 128) for t in (lo, hi)]
        proj.append(f"<tr><th>{html.escape(m.name)} (L = {m.layers})</th><td>{lo}–{hi}</td>"
                    f"<td>{cells[0]}–{cells[1]}</td><td>{cells[2]}–{cells[3]}</td><td>{m.speedup:.2f}×</td></tr>")
    return (
        f'<div class="costs"><p class="formula">{FORMULA}</p>'
        f'<table class="timing-table"><tr><th>this run, measured</th><th>value</th><th></th></tr>{body}</table>'
        '<p class="note">Predicted counts drafting rounds only; the measured speedup also pays the prefill and any '
        'plain rounds, so it sits between the prediction and 1×.'
        + (f' {len(slow)} round(s) far slower than the others of their kind (marked in the Rounds tab, e.g. '
           f'warm-up) are left out of the terms.' if slow else '') + '</p>'
        '<p><b>Projection</b> (not measured): the same formula for the paper\'s models at batch 1 on a GPU, where a '
        'step is bound by reading the weights: a draft step reads the lm_head and the L − M kept layers '
        '(M = 0.45·L), a verification about one step, the DP about one step, and k̄ ≈ τ. The τ ranges and the '
        'measured speedups are the paper\'s (Table 1, T = 0).</p>'
        '<table class="timing-table"><tr><th>model</th><th>paper τ</th><th>projected, LOI 1</th>'
        f'<th>projected, LOI 128</th><th>paper, measured</th></tr>{"".join(proj)}</table>'
        f'<p class="note">Reading the two tables together: on this device a verification of k̄ + 1 positions costs '
        f'{c.r_verify:.2f} steps and a DP run {c.dp:.2f}, where a memory-bound GPU pays about 1 for each; and a '
        f'small model\'s draft agrees less often (τ over drafting rounds {c.tau:.2f} here against the paper\'s '
        f'3.7–7.2). Deep models '
        f'on a GPU get both terms in CLaSp\'s favour.</p></div>')


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

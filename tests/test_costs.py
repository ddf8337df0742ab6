"""The cost model: its terms read from a recorded run, the formula, and the panel that shows both."""
import math
from pathlib import Path

import pytest

from clasp_core import trace
from clasp_core.costs import PAPER_MODELS, Costs, draft_steps, plain_step_s, projection, run_costs
from ui.views.costs_view import cost_html, measured_costs
from ui.views.state import RunState, is_plain

TRACE = Path(__file__).resolve().parents[1] / "assets" / "example-trace.jsonl"


@pytest.fixture(scope="module")
def state():
    return RunState(trace.read_trace(TRACE))


def test_terms_come_from_the_runs_own_clocks(state):
    c, v = state.clasp, state.vanilla
    step = plain_step_s([s.seconds for s in v.steps])
    costs = run_costs(c.rounds, c.choices, step)
    drafting = [r for r in c.rounds if not is_plain(r)]
    steps = sum(draft_steps(r) for r in drafting)
    assert steps >= sum(len(r.drafted) for r in drafting)
    assert costs.k == pytest.approx(steps / len(drafting))
    assert costs.r_draft * step * steps == pytest.approx(sum(r.draft_s for r in drafting))
    assert costs.r_verify * step * len(drafting) == pytest.approx(sum(r.verify_s for r in drafting))
    assert costs.tau == pytest.approx(sum(len(r.emitted) for r in drafting) / len(drafting))
    assert costs.dp * step == pytest.approx(sum(x.seconds for x in c.choices) / len(c.choices))
    # the formula
    assert costs.speedup == pytest.approx(costs.tau / (costs.k * costs.r_draft + costs.r_verify
                                                        + costs.dp / costs.loi))


def test_prediction_is_close_to_what_the_run_measured(state):
    costs = measured_costs(state.clasp, state.vanilla)
    measured = state.clasp.done.tokens_per_s / state.vanilla.done.tokens_per_s
    # the prediction leaves out prefill and plain rounds, which pull the measurement towards 1x
    assert abs(costs.speedup - measured) < 0.25 * max(costs.speedup, measured)
    html = cost_html(state.clasp, state.vanilla)
    assert f"{costs.speedup:.2f}×" in html and f"{measured:.2f}×" in html and "Projection" in html


def test_loi_needed_and_the_hopeless_case():
    c = Costs(step_s=0.01, k=3, r_draft=0.5, r_verify=1.5, dp=2.0, loi=1, tau=3.5)
    assert c.round_cost == pytest.approx(3 + 2.0) and c.speedup == pytest.approx(0.7)
    assert c.loi_to_win == pytest.approx(2.0 / (3.5 - 3.0))           # LOI 4 would win
    assert Costs(0.01, 3, 0.9, 2.0, 2.0, 1, 2.0).loi_to_win == math.inf


def test_projection_for_the_papers_models_is_labelled_and_in_range():
    for m in PAPER_MODELS:
        lo, hi = (projection(m, t, loi=128).speedup for t in m.tau)
        assert 1.0 < lo < hi < 2.5                 # deep models on a GPU: drafting pays
        assert projection(m, m.tau[0], loi=1).speedup < lo      # a DP every round costs
    assert "not measured" in cost_html(*_two_runs())


def _two_runs():
    s = RunState(trace.read_trace(TRACE))
    return s.clasp, s.vanilla

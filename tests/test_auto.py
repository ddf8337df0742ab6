"""Adaptive skipping: the policy's decisions from measured costs, and losslessness of auto runs."""
import pytest

from clasp_core.auto import AutoPolicy
from clasp_core.decoding import GenConfig, generate
from tests.test_decoding import PROMPT, hf_greedy


def policy(**kw):
    return AutoPolicy(num_layers=30, M_max=14, K_max=8, head_share=0.2, **kw)


def test_first_round_is_a_plain_step_to_measure_costs():
    assert policy().plan()[0] is None


def test_drafts_when_verification_is_cheap_and_drafts_are_accepted():
    p = policy()
    p.observe_plain(0.010)
    p.beta = 0.02                                   # GPU-like: verifying k tokens costs about one step
    for arm in p.arms:
        arm.trials, arm.accepted, arm.r_draft = 100, 85, 0.5
    arm, k, speed = p.plan()
    # alpha 0.84, draft at half cost: K=2 gives E=2.55 tokens for 2.04 steps
    assert arm is not None and k == 2 and speed == pytest.approx(1.25, abs=0.01)


def test_falls_back_to_plain_steps_when_drafting_is_slower():
    p = policy()
    p.observe_plain(0.035)
    p.beta = 0.35                                   # CPU-like: each verified token costs a third of a step
    for arm in p.arms:
        arm.trials, arm.accepted, arm.r_draft = 40, 12, 0.6
    assert p.plan() == (None, 0, 1.0)


def test_prefill_sets_the_first_guess_of_verify_cost():
    p = policy(prefill=(0.2, 51))
    p.observe_plain(0.04)                           # prefill of 51 tokens = 5 steps -> beta = 4/50
    assert p.beta == pytest.approx(0.08)


def test_dp_interval_stretches_to_keep_the_dp_cheap():
    p = policy()
    p.observe_plain(0.01)
    p.observe_dp(0.03)
    assert p.loi(1) == 100 and p.loi(200) == 200


def test_auto_runs_are_lossless(tiny):
    tiny.model.generation_config.eos_token_id = None
    cfg = GenConfig(max_new_tokens=40, auto=True, num_skip=3, draft_len=4)
    done = list(generate(tiny, None, cfg, "clasp", prompt_ids=PROMPT))[-1]
    assert done.output_ids == hf_greedy(tiny, 40)


def test_auto_runs_its_first_dp_only_when_it_wants_to_draft(tiny, monkeypatch):
    """Where drafting pays (forced here): a plain step to price a step, one more that feeds the DP, then drafts."""
    from clasp_core.trace import LayerChoice, Round

    def eager_plan(self):
        return (None, 0, 1.0) if self.c1 is None else (self.arms[0], 3, 2.0)

    monkeypatch.setattr(AutoPolicy, "plan", eager_plan)
    tiny.model.generation_config.eos_token_id = None
    events = list(generate(tiny, None, GenConfig(max_new_tokens=40, auto=True, num_skip=3, draft_len=4),
                           "clasp", prompt_ids=PROMPT))
    kinds = [type(e).__name__ for e in events]
    assert kinds[:5] == ["Prefill", "Round", "Round", "LayerChoice", "Round"]
    first = next(e for e in events if isinstance(e, LayerChoice))
    rounds = [e for e in events if isinstance(e, Round)]
    assert rounds[0].drafted == rounds[1].drafted == [] and rounds[2].drafted
    assert [r.k_max for r in rounds[:3]] == [0, 0, 3] and [r.choice for r in rounds[:3]] == [-1, -1, 0]
    assert len(rounds[2].skip) == 1                            # the 0.2 L arm of a 6-layer model: M = 1
    # the event tells the set that round really drafted with (not the one backtracked for M = 3),
    # and its path in the D table ends in that set's column
    assert first.round == 2 and first.skip == rounds[2].skip and first.num_skip == 1
    assert first.path[0] == [6, 1] and first.path[-1] == [0, 0] and first.flags is not None
    assert len(first.D[0]) == 4                                # the table still spans M = 0..3
    assert events[-1].output_ids == hf_greedy(tiny, 40)

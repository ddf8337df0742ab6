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

"""Adaptive skipping: the policy's decisions from measured costs, and losslessness of auto runs."""
import inspect

import pytest

from clasp_core.auto import AutoPolicy, FixedPolicy, Policy
from clasp_core.decoding import GenConfig, generate
from tests.test_decoding import PROMPT, hf_greedy


def policy(**kw):
    return AutoPolicy(num_layers=30, M_max=14, K_max=8, head_share=0.2, **kw)


def measured(p, seconds, n=None):
    """Plain steps of ``seconds`` each, enough to price a step (the warm-up step included)."""
    for _ in range(n or p.WARMUP_STEPS + p.MIN_PLAIN):
        p.observe_plain(seconds)


def test_first_rounds_are_plain_steps_to_measure_costs():
    p = policy()
    for _ in range(p.WARMUP_STEPS + p.MIN_PLAIN):
        assert p.plan()[0] is None and p.note["reason"] == "measure"
        p.observe_plain(0.01)
    assert p.c1 == pytest.approx(0.01)


def test_drafts_when_verification_is_cheap_and_drafts_are_accepted():
    p = policy()
    measured(p, 0.010)
    p.verify_s.append((4, 0.0108))                  # GPU-like: verifying 4 tokens costs about one step
    for arm in p.arms:
        arm.trials, arm.accepted = 100, 85
        arm.step_s.append(0.005)                    # a draft step at half a plain step
    arm, k, speed = p.plan()
    # alpha 0.84, draft at half cost, beta 0.02: K=2 gives E=2.55 tokens for 2.04 steps
    assert arm is not None and k == 2 and speed == pytest.approx(1.25, abs=0.01)
    assert p.note["choice"] == "draft" and p.note["draft_speed"] == speed and p.note["step_ms"] == pytest.approx(10)


def test_falls_back_to_plain_steps_when_drafting_is_slower():
    p = policy()
    measured(p, 0.035)
    p.verify_s.append((2, 0.035 * 1.7))             # CPU-like: each verified token costs a third of a step
    for arm in p.arms:
        arm.trials, arm.accepted = 40, 12
        arm.step_s.append(0.6 * 0.035)
    assert p.plan() == (None, 0, 1.0)
    # the note says why: the best draft's predicted speed, against 1.0 for a plain step
    assert p.note["choice"] == "plain" and p.note["reason"] == "model" and p.note["draft_speed"] < 1.0


def test_a_slow_warm_up_does_not_make_drafting_look_cheap():
    """The app's first run priced drafting against two slow warm-up steps (1212 and 407 ms
    against a median of 53 ms), then drafted in 38 of 40 rounds at 0.29x vanilla."""
    p = policy()
    p.observe_prefill(0.25, 40)
    for s in (1.212, 0.407, 0.053, 0.053, 0.054):
        p.observe_plain(s)
    assert p.c1 == pytest.approx(0.0535)            # the warm-up step is left out, the outlier has no weight
    assert p.beta == pytest.approx((0.25 / 0.0535 - 1) / 39)
    arm, _, _ = p.plan()
    # on these (CPU-like) costs no arm pays, even with the optimism of untried arms
    assert arm is None and p.note["reason"] == "model"


def test_an_inflated_plain_step_is_corrected_by_what_verifications_cost():
    """c1 stuck high (measured under load that has gone): a verification of k + 1 positions never costs
    less than one, so recent verifications cap it, and drafting is not priced against a stale step."""
    p = policy()
    measured(p, 0.200)
    for _ in range(3):
        p.verify_s.append((3, 0.060))
    assert p.c1 == pytest.approx(0.060)


def test_measured_slowdown_falls_back_to_plain_steps_then_re_measures():
    p = policy()
    measured(p, 0.050)
    arm = p.arms[0]
    for _ in range(p.CHECK_ROUNDS):                 # each round: 2 tokens for 3 plain steps' time
        p.observe(arm, drafted=3, accepted=1, draft_steps=3, draft_s=0.06, verify_s=0.09)
    assert p.fallbacks == 1 and p.hold == p.COOLDOWN
    for _ in range(p.COOLDOWN):
        assert p.plan()[0] is None and p.note["reason"] == "hold"
        p.observe_plain(0.050)
    assert p.hold == 0 and p.cooldown == 2 * p.COOLDOWN      # a second fall-back waits twice as long


def test_drafting_is_interrupted_by_plain_steps_that_re_measure_the_step():
    p = policy()
    measured(p, 0.050)
    arm = p.arms[0]
    for _ in range(p.PROBE_EVERY):                  # drafting that pays: 3 tokens for 1.5 steps
        p.observe(arm, drafted=2, accepted=2, draft_steps=2, draft_s=0.03, verify_s=0.045)
    assert p.fallbacks == 0
    assert p.plan()[0] is None and p.note["reason"] == "probe"


def test_prefill_sets_the_first_guess_of_verify_cost():
    p = policy()
    p.observe_prefill(0.2, 51)
    measured(p, 0.04)                               # prefill of 51 tokens = 5 steps -> beta = 4/50
    assert p.beta == pytest.approx(0.08)


def test_both_policies_answer_every_call_of_the_policy_protocol_alike():
    """The loop calls these on whichever policy it has: a method missing from one, or taking other
    arguments, would fail only in the runs that use that policy."""
    calls = [k for k, v in vars(Policy).items() if callable(v) and not k.startswith("_")]
    assert {"plan", "loi", "observe_prefill", "observe", "observe_dp"} <= set(calls)
    for cls in (FixedPolicy, AutoPolicy):
        for name in calls:
            params = inspect.signature(getattr(cls, name)).parameters
            assert list(params) == list(inspect.signature(getattr(Policy, name)).parameters), (cls, name)
    fixed = FixedPolicy(4, 6, 0.7)
    fixed.observe_prefill(0.2, 51)                  # learns nothing: the same plan before and after
    assert fixed.plan() == (fixed.arm, 6, 1.0) and fixed.det == 0.7 and fixed.choose_at_prefill


def test_dp_interval_stretches_to_keep_the_dp_cheap():
    p = policy()
    measured(p, 0.01)
    p.observe_dp(0.03)
    assert p.loi(1) == 100 and p.loi(200) == 200


def test_auto_does_not_commit_to_drafting_after_a_slow_warm_up_step(tiny, monkeypatch):
    """A whole auto run on a synthetic clock where the first plain step is slow (a warm-up): the
    policy must not draft on the strength of that step, and each round says why it was plain."""
    import clasp_core.decoding as decoding
    from clasp_core.clock import Clock

    clock = {"t": 0.0, "calls": 0}
    real_verify = decoding.verify

    def now(self):
        return clock["t"]

    def verify(runner, last, pos, drafted, *args):    # a plain step costs 50 ms, the first one 1.2 s;
        clock["calls"] += 1                          # k drafts + 35%/k
        verdict = real_verify(runner, last, pos, drafted, *args)
        clock["t"] += (1.2 if clock["calls"] == 1 else 0.05) * (1 + 0.35 * len(drafted.tokens))
        return verdict

    monkeypatch.setattr(Clock, "now", now)
    monkeypatch.setattr(decoding, "verify", verify)
    tiny.model.generation_config.eos_token_id = None
    events = list(generate(tiny, None, GenConfig(max_new_tokens=24, auto=True, num_skip=3, draft_len=4),
                           "clasp", prompt_ids=PROMPT))
    rounds = [e for e in events if type(e).__name__ == "Round"]
    # draft steps cost nothing on this clock, yet a 35% verification slope never pays at tiny's acceptance
    assert rounds and all(r.auto is not None for r in rounds)
    assert [r.auto["reason"] for r in rounds[:4]] == ["measure"] * 4
    assert rounds[4].auto["step_ms"] == pytest.approx(50)      # not skewed by the 1.2 s warm-up
    assert events[-1].output_ids == hf_greedy(tiny, 24)


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

    monkeypatch.setattr(AutoPolicy, "MIN_PLAIN", 1)
    monkeypatch.setattr(AutoPolicy, "WARMUP_STEPS", 0)

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

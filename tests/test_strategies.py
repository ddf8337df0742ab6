"""Ways of choosing layers, one loop: each is lossless, tells what it chose, and fails clearly."""
import random

import pytest
import torch

from clasp_core import static_search
from clasp_core.auto import AutoPolicy
from clasp_core.bench import methods
from clasp_core.decoding import GenConfig, generate
from clasp_core.layer_dp import backtrack
from clasp_core.strategies import (
    DP_STRATEGIES,
    LOOKUP_STRATEGIES,
    STRATEGIES,
    FixedLayers,
    LayerDP,
    register,
    unregister,
)
from clasp_core.trace import LayerChoice, Prefill, Round
from tests.test_decoding import PROMPT, hf_greedy, run


def split(events):
    return ([e for e in events if isinstance(e, LayerChoice)], [e for e in events if isinstance(e, Round)])


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s not in LOOKUP_STRATEGIES])   # see test_lookup.py
def test_every_strategy_is_token_identical_to_transformers_generate(tiny, strategy):
    tiny.model.generation_config.eos_token_id = None
    events = run(tiny, num_skip=3, draft_len=4, loi=2, strategy=strategy)
    choices, rounds = split(events)
    done = events[-1]
    assert done.output_ids == hf_greedy(tiny, 40)
    assert done.drafted > done.accepted > 0                    # it drafted, and some drafts were rejected
    assert isinstance(events[0], Prefill) and events[0].method == "clasp"
    assert events[0].config.strategy == strategy
    assert all(c.strategy == strategy and len(c.skip) == c.num_skip == 3 for c in choices)
    for r in rounds:                                           # each round drafted with the choice in force
        assert r.k_max == min(4, 40 - r.start - 1) and r.skip == (choices[r.choice].skip if r.k_max else [])
    if strategy in ("clasp", "clasp-fused"):
        assert len(choices) > 1 and done.dp_calls == len(choices)
    else:
        assert len(choices) == 1 and choices[0].round == 0    # chosen once, before the first round
    if strategy in ("clasp", "clasp-once", "clasp-fused"):
        assert choices[0].flags is not None and choices[0].D and choices[0].path[0] == [6, 3]
    else:
        assert choices[0].D == [] and choices[0].path == [] and choices[0].flags is None
        assert done.dp_calls == 0 and done.dp_s == 0


def test_early_exit_skips_the_last_m_layers(tiny):
    choices, _ = split(run(tiny, num_skip=4, strategy="early-exit", max_new_tokens=8))
    assert choices[0].skip == [2, 3, 4, 5]


def test_random_layers_come_from_the_seed_not_from_the_sampling_generator(tiny):
    state = torch.get_rng_state()
    for seed in (0, 1, 2):
        choices, _ = split(run(tiny, num_skip=3, strategy="random", seed=seed, max_new_tokens=8))
        assert choices[0].skip == sorted(random.Random(seed).sample(range(6), 3))
    assert torch.equal(torch.get_rng_state(), state)
    # at temperature > 0 the draw does not shift the run's sampling stream: with nothing skipped
    # the random strategy and the DP give the same tokens for the same seed
    kw = dict(num_skip=0, temperature=0.9, seed=5, max_new_tokens=20)
    assert run(tiny, strategy="random", **kw)[-1].output_ids == run(tiny, strategy="clasp", **kw)[-1].output_ids


def test_static_reads_the_offline_set_and_keeps_its_cost_out_of_the_run(tiny, monkeypatch):
    calls = []

    def found(lm, M, progress=None):
        calls.append(M)
        return static_search.StaticSet(skip=[0, 2, 5], M=M, score=0.5, seconds=42.0, how="test set")

    monkeypatch.setattr(static_search, "static_skip_set", found)
    tiny.model.generation_config.eos_token_id = None
    events = run(tiny, num_skip=3, strategy="static")
    choices, rounds = split(events)
    assert calls == [3] and choices[0].skip == [0, 2, 5]
    assert all(r.skip == [0, 2, 5] for r in rounds if r.drafted)
    setup = events[0].setup
    assert setup["static_search_s"] == 42.0 and setup["static_how"] == "test set"
    assert choices[0].seconds < 42.0 and events[-1].output_ids == hf_greedy(tiny, 40)


def test_unknown_strategy_and_auto_with_a_fixed_set_are_clear_errors(tiny):
    with pytest.raises(ValueError, match="unknown layer-choice strategy 'swift'; use one of clasp, clasp-once, "
                                         "clasp-fused, static, early-exit, random, lookup, clasp\\+lookup"):
        generate(tiny, None, GenConfig(strategy="swift"), prompt_ids=PROMPT)
    for s in ("static", "early-exit", "random"):
        with pytest.raises(ValueError,
                           match=f"auto .* clasp and clasp-once and clasp-fused and clasp\\+lookup only, not '{s}'"):
            generate(tiny, None, GenConfig(auto=True, strategy=s), prompt_ids=PROMPT)


def test_auto_with_clasp_once_runs_the_dp_once_and_stays_lossless(tiny, monkeypatch):
    def eager_plan(self):
        return (None, 0, 1.0) if self.c1 is None else (self.arms[len(self.arms) // 2], 3, 2.0)

    monkeypatch.setattr(AutoPolicy, "plan", eager_plan)
    tiny.model.generation_config.eos_token_id = None
    events = list(generate(tiny, None, GenConfig(max_new_tokens=40, auto=True, num_skip=4, draft_len=4,
                                                 strategy="clasp-once"), "clasp", prompt_ids=PROMPT))
    choices, rounds = split(events)
    assert len(choices) == 1 and events[-1].dp_calls == 1
    drafting = [r for r in rounds if r.drafted]
    assert drafting and all(r.choice == 0 for r in drafting)
    # every round drafts with a set backtracked from the choice's table, for the M it planned
    for r in drafting:
        assert r.skip == backtrack(choices[0].flags, 6, len(r.skip))[0]
    assert choices[0].skip == drafting[0].skip
    assert events[-1].output_ids == hf_greedy(tiny, 40)


class SkipFirst(FixedLayers):
    """A throwaway draft source: the first M layers (never registered outside the test below)."""

    name = "skip-first"
    label = "skip first: the first M layers"
    help = "*Skip first* drafts with the last L − M layers."

    def layers(self, M: int) -> list[int]:
        return list(range(M))


def test_one_registered_class_is_a_draft_source_everywhere(tiny):
    from ui.serving.handlers import auto_for_strategy
    from ui.views.compare import _label, strategy_choices, strategy_help

    assert "skip-first" not in STRATEGIES
    register(SkipFirst)
    try:
        assert STRATEGIES[-1] == "skip-first" and "skip-first" not in DP_STRATEGIES + LOOKUP_STRATEGIES
        assert "skip-first" in methods.METHODS                                  # the bench's methods
        assert methods.engine_config(GenConfig(), "skip-first") == ("clasp", GenConfig(strategy="skip-first"))
        assert strategy_choices()[-1] == ("skip first: the first M layers", "skip-first")   # the page's selector
        assert "*Skip first* drafts" in strategy_help() and _label({"strategy": "skip-first"}) == "skip first"
        off = auto_for_strategy("skip-first", True)                             # no DP table: auto is off
        assert off["value"] is False and "skip-first" in off["info"]
        tiny.model.generation_config.eos_token_id = None                        # and the engine runs it
        events = run(tiny, num_skip=2, draft_len=4, strategy="skip-first")
        choices, rounds = split(events)
        assert choices[0].skip == [0, 1] and choices[0].strategy == "skip-first"
        assert any(r.drafted for r in rounds) and events[-1].output_ids == hf_greedy(tiny, 40)
        with pytest.raises(ValueError, match="auto .* only, not 'skip-first'"):
            generate(tiny, None, GenConfig(auto=True, strategy="skip-first"), prompt_ids=PROMPT)
    finally:
        unregister("skip-first")
    assert "skip-first" not in STRATEGIES and "skip-first" not in methods.METHODS
    assert "skip-first" not in [name for _, name in strategy_choices()]
    with pytest.raises(ValueError, match="unknown layer-choice strategy 'skip-first'"):
        generate(tiny, None, GenConfig(strategy="skip-first"), prompt_ids=PROMPT)


def test_register_refuses_a_taken_name_or_a_class_missing_part_of_the_protocol():
    class Again(LayerDP):
        pass                                    # inherits the name "clasp"

    class NoHelp:
        name, label, uses_dp, drafts, lookup, bench_auto = "no-help", "no help", False, True, False, False

    with pytest.raises(TypeError, match="the strategy name 'clasp' is taken by LayerDP"):
        register(Again)
    with pytest.raises(TypeError, match="NoHelp lacks help, fused, prepare, choose, due"):
        register(NoHelp)
    assert "no-help" not in STRATEGIES and STRATEGIES[0] == "clasp"

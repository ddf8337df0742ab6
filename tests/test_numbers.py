"""Every number on the page agrees with the others: one test per disagreement found,
each on a small synthetic trace, each failing on the page as it was."""
import pytest

from clasp_core.costs import run_costs
from clasp_core.settings import GenConfig
from clasp_core.trace import Done, LayerChoice, Prefill, Round, Step
from ui.views.state import RunState

L = 4


def prefill(method="clasp", **params):
    return Prefill(method=method, model="toy", num_layers=L, prompt_ids=[1], prompt_text="p",
                   config=GenConfig(**{"temperature": 0, "max_new_tokens": 64, "det": 0.7, "loi": 1, "num_skip": 1,
                                       "draft_len": 4, "strategy": "clasp", **params}), seconds=0.1, first_token=5,
                   first_text="A")


def rnd(index, start, drafted=(6,), accepted=1, k_max=None, skip=(1,), s=0.05, choice=0, auto=None):
    drafted = list(drafted)
    emitted = drafted[:accepted] + [9]
    plain = k_max == 0
    extra = {"auto": auto} if auto is not None else {}
    return Round(**extra, index=index, skip=[] if plain else list(skip), drafted=drafted,
                 drafted_text=[f"d{t}" for t in drafted], draft_probs=[0.9] * len(drafted),
                 target_probs=[0.8] * len(drafted), accepted=accepted, next_token=9, next_text="N",
                 next_kind="bonus" if accepted == len(drafted) else "corrected", emitted=emitted,
                 draft_s=0.0 if plain else s / 2, verify_s=s / 2 if not plain else s, start=start,
                 k_max=len(drafted) if k_max is None else k_max, choice=-1 if plain else choice)


def done(rounds, method="clasp", wall=2.0, dp_s=0.0, dp_calls=0, tokens_per_s=None):
    n = 1 + sum(len(r.emitted) for r in rounds)
    return Done(method=method, new_tokens=n, output_ids=[5] * n, text="", wall_s=wall, decode_s=wall - 0.1,
                prefill_s=0.1, tokens_per_s=tokens_per_s or n / wall, stop_reason="max_new_tokens",
                rounds=len(rounds), drafted=sum(len(r.drafted) for r in rounds),
                accepted=sum(r.accepted for r in rounds), tau=(n - 1) / len(rounds) if rounds else 0.0,
                dp_s=dp_s, dp_calls=dp_calls)


def layer_choice(round_, seconds=0.01):
    return LayerChoice(round=round_, position=1, skip=[1], D=[[1.0, 0.9]] * (L + 1), path=[[4, 1], [0, 0]],
                       seconds=seconds, num_skip=1)


def vanilla(n, step=0.05, tokens_per_s=10.0):
    steps = [Step(index=i, token=5, text="x", seconds=step) for i in range(1, n)]
    return [prefill("vanilla"), *steps, Done(method="vanilla", new_tokens=n, output_ids=[5] * n, text="",
                                             wall_s=n / tokens_per_s, decode_s=n / tokens_per_s - 0.1,
                                             prefill_s=0.1, tokens_per_s=tokens_per_s, stop_reason="max_new_tokens")]


def mixed_run(**params):
    """Two plain steps, then three drafting rounds (one of them a DET stop that kept no draft)."""
    rounds = [rnd(0, 1, drafted=(), accepted=0, k_max=0), rnd(1, 2, drafted=(), accepted=0, k_max=0),
              rnd(2, 3, drafted=(6, 7), accepted=2), rnd(3, 6, drafted=(), accepted=0, k_max=4),
              rnd(4, 7, drafted=(6, 7, 8), accepted=1)]
    return [prefill(**params), layer_choice(2), *rounds, done(rounds)], rounds


# 1. two τ in one run, both labelled "τ"
def test_the_two_taus_are_named_apart_and_each_shown_with_its_own_value():
    from ui.views.costs_view import cost_html
    from ui.views.timing import timing_html

    events, rounds = mixed_run()
    state = RunState(events + vanilla(10))
    all_rounds, drafting = state.clasp.done.tau, (3 + 1 + 2) / 3        # 6 tokens in the 3 drafting rounds
    assert all_rounds != pytest.approx(drafting)
    timing = timing_html(state.clasp, state.vanilla)
    assert f"τ over drafting rounds</th><td>{drafting:.2f}" in timing
    assert f"τ: tokens per round, all rounds</th><td>{all_rounds:.2f}" in timing
    costs = cost_html(state.clasp, state.vanilla)
    assert "τ: tokens per round" not in costs and f"τ over drafting rounds</th><td>{drafting:.2f}" in costs


# 2. "drafted" means one thing: a round that ran a draft step
def test_a_det_stop_is_a_drafting_round_everywhere():
    from ui.views.costs_view import measured_costs
    from ui.views.rounds import rounds_dataframe
    from ui.views.timing import timing_html

    events, rounds = mixed_run()
    state = RunState(events + vanilla(10))
    assert [r.drafting for r in rounds] == [False, False, True, True, True]
    assert "no draft" not in rounds_dataframe(state.clasp)["kind"].tolist()     # it did run a draft step
    assert "drafting rounds (ran a draft step)</th><td>3 of 5" in timing_html(state.clasp, state.vanilla)
    assert measured_costs(state.clasp, state.vanilla).k == pytest.approx((2 + 1 + 3) / 3)


# 3. the DP's share, K and M as auto really had them
def test_the_auto_status_states_the_measured_dp_share_and_the_k_it_used():
    from ui.views.auto_view import auto_summary

    note = {"reason": "model", "choice": "draft", "step_ms": 53.0, "verify_slope": 0.3, "plain_speed": 1.0,
            "measured_speed": None, "hold": 0, "fallbacks": 0, "M": 1, "K": 2, "draft_speed": 1.2, "alpha": 0.8,
            "r_draft": 0.6, "draft_measured": True, "r_verify": 1.6}
    rounds = [rnd(0, 1, drafted=(6,), k_max=1, auto=note), rnd(1, 3, drafted=(6, 7, 8), k_max=3, auto=note)]
    view = RunState([prefill(auto=True), layer_choice(0), *rounds,
                     done(rounds, wall=1.0, dp_s=0.074, dp_calls=2)]).clasp
    text = auto_summary(view, "cpu")
    assert "7.4%" in text and "K = 1–3" in text and "M ∈ {1}" in text
    assert "exactly K" not in text and "stays near 3%" not in text
    assert "53 ms" in text                                                    # and why it drafted


def test_the_auto_status_states_its_margin_and_which_inputs_are_measured_or_assumed():
    from ui.views.auto_view import auto_summary
    from ui.views.teaching import explain_round

    note = {"reason": "model", "choice": "plain", "step_ms": 32.0, "verify_slope": 0.3, "plain_speed": 1.0,
            "measured_speed": None, "hold": 0, "fallbacks": 0, "margin": 1.05, "plain_n": 9, "verify_n": 0,
            "M": 14, "K": 1, "draft_speed": 1.03, "alpha": 0.75, "r_draft": 0.63, "draft_measured": False,
            "r_verify": 1.3, "draft_n": 0, "trials": 0, "accepted": 0, "optimism": 0.25}
    rounds = [rnd(i, 1 + i, drafted=(), accepted=0, k_max=0, auto=note) for i in range(6)]
    view = RunState([prefill(auto=True), *rounds, done(rounds)]).clasp
    status = auto_summary(view, "cpu")
    assert "predicted slower than plain steps" not in status            # 1.03× is not slower: the margin is why
    assert "no draft was predicted at least 1.05× a plain step's speed" in status
    assert "its margin against noise" in status
    assert "acceptance 0.75, assumed: nothing drafted at M = 14 yet" in status
    assert "plain step 32 ms (measured: the median of its last 9 plain steps" in status
    assert "0.63 of a plain step (an estimate from the weights it reads, not measured" in status
    assert "Timing tab's medians are over all of a run's steps" in status     # why the two medians differ
    assert "1.05×" in explain_round(view, 3)                            # Teach says the same


# 4. Compare's LOI column
def test_compare_shows_the_loi_each_run_really_had():
    from ui.views.compare import run_summary

    rounds = [rnd(i, 1 + 2 * i) for i in range(19)]
    auto = RunState([prefill(auto=True), layer_choice(0), *rounds, done(rounds, dp_calls=1)] + vanilla(10))
    assert run_summary(auto)["LOI"] == "19 (auto)"
    static = RunState([prefill(strategy="static"), layer_choice(0), *rounds, done(rounds)] + vanilla(10))
    assert run_summary(static)["LOI"] == "–"                                # no DP ran


# 5. a run that never drafted says its difference from vanilla is noise, everywhere, and where it went
def test_a_run_that_never_drafted_announces_no_speedup_anywhere():
    from html import unescape

    from ui.views.costs_view import cost_html
    from ui.views.timing import summary_html, timing_html

    rounds = [rnd(i, 1 + i, drafted=(), accepted=0, k_max=0, s=0.055) for i in range(9)]
    state = RunState([prefill(auto=True), *rounds, done(rounds, tokens_per_s=11.2)] + vanilla(10, step=0.05))
    said = "no drafting: both sides decoded plainly; the difference (+12%) is this machine's run-to-run noise"
    for page in (summary_html(state.clasp, state.vanilla), timing_html(state.clasp, state.vanilla),
                 cost_html(state.clasp, state.vanilla)):
        text = unescape(page)
        assert said in text and "speedup 1.12" not in text and "speedup <b>1.12" not in text
    costs = unescape(cost_html(state.clasp, state.vanilla))
    assert "the median of all 9 of its steps took 55.0 ms against 50.0 ms for the median of all 9 of vanilla's" \
        in costs


def test_every_speedup_comes_with_its_noise_and_says_how_it_is_read():
    from html import unescape

    from ui.views.costs_view import cost_html
    from ui.views.timing import summary_html, timing_html

    events, rounds = mixed_run()
    steps = [0.040, 0.050, 0.050, 0.050, 0.060, 0.050, 0.050, 0.050]        # IQR 0.0025 .. 0.01 of 0.05
    base = vanilla(9, tokens_per_s=2.0)
    base[1:9] = [Step(index=i + 1, token=5, text="x", seconds=t) for i, t in enumerate(steps)]
    state = RunState(events + base)
    speed = state.clasp.done.tokens_per_s / 2.0
    from statistics import quantiles
    q1, _, q3 = quantiles(steps, n=4)
    noise = f"noise ±{100 * (q3 - q1) / 0.05:.0f}%"
    header = unescape(summary_html(state.clasp, state.vanilla))
    assert f"speedup <b>{speed:.2f}×</b> ({noise}" in header
    timing = unescape(timing_html(state.clasp, state.vanilla))
    assert f"speedup <b>{speed:.2f}×</b> ({noise}" in timing and "interquartile range ÷ median" in timing
    assert noise in unescape(cost_html(state.clasp, state.vanilla))


# 6. warm-up rounds are marked and do not skew the cost model
def test_a_warm_up_round_is_marked_and_left_out_of_the_costs():
    from ui.views.rounds import rounds_dataframe

    rounds = [rnd(0, 1, s=1.212), *(rnd(i, 1 + 2 * i, s=0.053) for i in range(1, 8))]
    view = RunState([prefill(), layer_choice(0), *rounds, done(rounds)]).clasp
    notes = rounds_dataframe(view)["note"].tolist()
    assert notes[0].startswith("slow") and not any(notes[1:])
    costs = run_costs(view.rounds, view.choices, step_s=0.05)
    assert costs.r_verify == pytest.approx(0.0265 / 0.05)                   # the 1.2 s round left out


# 7. the persistence sentence claims only what the plotted run supports
def test_the_jaccard_note_does_not_read_a_held_set_as_evidence():
    from ui.views.analysis import persistence_note
    from ui.views.registry import ANALYSIS_HELP

    rounds = [rnd(i, 1 + 2 * i, choice=0) for i in range(19)]
    view = RunState([prefill(auto=True), layer_choice(0), *rounds, done(rounds, dp_calls=1)]).clasp
    note = persistence_note(view)
    assert "by construction" in note and "every 19 rounds" in note
    assert "loses little" not in ANALYSIS_HELP + note and "barely changes" not in ANALYSIS_HELP + note


# ---- Compare gives a fair verdict ----------------------------------------------------
def row(strategy, tau, drafted=60, det=0.7, auto=False, prompt="<|im_start|>user\nName two fruits.<|im_end|>",
        speed=0.8):
    return {"prompt": prompt, "temperature": 0.0, "strategy": strategy, "auto": auto, "M": 14, "K": 8, "DET": det,
            "LOI": "1", "τ": tau, "acceptance": 0.5, "drafted": drafted, "tokens/s": 10.0, "× vanilla": speed}


def test_compare_sets_only_runs_with_the_same_settings_side_by_side():
    from ui.views.compare import compare_figure, conclusion

    history = [row("clasp", 1.4, det=0.3), row("static", 1.2, det=0.7), row("clasp", 1.3, det=0.7)]
    fig = compare_figure(history, None)
    assert list(fig.data[0].x) == ["1. static", "2. CLaSp"]                 # the DET 0.3 run is left out
    verdict = conclusion(history, None)
    assert "DET 0.7" in verdict and "1 run(s) of this prompt with other settings are left out" in verdict


def test_the_verdict_is_worded_from_the_rows():
    from ui.views.compare import conclusion

    fixed_wins = conclusion([row("clasp", 1.30, speed=0.7), row("static", 1.32, speed=0.9)], None)
    assert "static drafts as well as CLaSp (τ 1.32 against 1.30) without the DP's cost" in fixed_wins
    assert "static is fastest (0.90× vanilla)" in fixed_wins
    dp_wins = conclusion([row("clasp", 1.6), row("early-exit", 1.2), row("random", 1.1, drafted=3)], None)
    assert "buys τ +0.40 over the best fixed set (early exit)" in dp_wins
    assert "Few drafts behind random" in dp_wins


def test_few_drafts_are_marked_and_history_survives_a_prompt_change():
    from ui.views.compare import compare_dataframe, strategy_help

    other = "<|im_start|>user\nSay hi.<|im_end|>"
    history = [row("clasp", 1.4), row("random", 1.0, drafted=1), row("clasp", 1.2, prompt=other),
               row("static", 1.1)]
    df = compare_dataframe(history, None)                   # grouped by prompt, the latest run's prompt last
    assert df["prompt"].tolist() == ["Say hi.", "Name two fruits.", "Name two fruits.", "Name two fruits."]
    assert df["note"].tolist() == ["", "", "few drafts (1): noisy", ""]
    assert "below" not in strategy_help()


def test_run_all_runs_every_draft_source_with_the_same_settings(monkeypatch, page):
    from clasp_core.strategies import STRATEGIES
    from ui.serving import handlers

    V = handlers.APP.components
    calls = []

    def fake_run(prompt, model, num_skip, draft_len, det, loi, temperature, top_p, seed, max_new_tokens, auto,
                 strategy, history, dtype="auto", request=None):
        calls.append((num_skip, draft_len, det, loi, auto, strategy, len(history)))
        yield {V["status"]: "Done.", V["history"]: history + [strategy]}

    monkeypatch.setattr(handlers, "run", fake_run)
    outs = list(handlers.run_all("Hi", "", 14, 8, 0.7, 1, 0.0, 1.0, 0, 16, True, "clasp", []))
    assert [c[5] for c in calls] == list(STRATEGIES)
    assert {c[:5] for c in calls} == {(14, 8, 0.7, 1, False)}            # same M, K, DET, LOI; auto off for all
    assert [c[6] for c in calls] == list(range(len(STRATEGIES)))          # each run sees the rows before it
    assert outs[-1][V["status"]].startswith(f"Run all ({len(STRATEGIES)}/{len(STRATEGIES)}: {list(STRATEGIES)[-1]})")


def test_compare_shows_the_loi_each_draft_source_ran_with():
    """clasp+lookup re-runs the DP every LOI rounds like clasp; clasp-once runs it once; lookup runs none."""
    from types import SimpleNamespace

    from ui.views.compare import loi_shown

    def view(strategy):
        return SimpleNamespace(config=GenConfig(strategy=strategy, loi=4, auto=False), done=None, rounds=[])

    assert [loi_shown(view(s)) for s in ("clasp", "clasp+lookup", "clasp-once", "lookup", "static")] == \
        ["4", "4", "once", "–", "–"]


def test_compare_groups_by_loi_and_counts_dp_once_among_the_fixed_sets():
    from ui.views.compare import compare_dataframe, conclusion

    def at(loi, *args, **kw):
        return {**row(*args, **kw), "loi_setting": loi}

    history = [at(1, "clasp", 1.3, speed=0.21), at(64, "early-exit", 1.0, speed=0.5),
               at(64, "clasp-once", 1.29, speed=0.6), at(64, "clasp", 1.3, speed=0.74)]
    verdict = conclusion(history, None)
    assert "LOI 64" in verdict and "3 draft sources" in verdict
    assert "1 run(s) of this prompt with other settings are left out" in verdict     # the LOI 1 run
    assert "DP once drafts as well as CLaSp (τ 1.29 against 1.30)" in verdict         # a fixed set too
    assert compare_dataframe(history, None)["settings"].tolist()[0].endswith("LOI 1")


def test_compare_runs_the_one_source_picked_there(monkeypatch):
    from ui.serving import handlers

    calls = []

    def fake_run(**params):
        calls.append((params["auto"], params["strategy"]))
        yield {}

    monkeypatch.setattr(handlers, "run", fake_run)
    for source in ("random", "clasp-once"):
        list(handlers.run_source("Hi", "", 14, 8, 0.7, 1, 0.0, 1.0, 0, 16, True, source, []))
    assert calls == [(False, "random"), (True, "clasp-once")]        # auto only where the DP's table is built


def test_the_primer_fills_in_this_runs_numbers_and_marks_the_ones_not_measured():
    from ui.views.costs_view import measured_costs
    from ui.views.primer import NOT_YET, primer_md

    before = primer_md(None, None)
    assert before.count(NOT_YET) >= 5 and "memory-bound" in before and "τ > k̄ · r<sub>d</sub>" in before
    assert before.index("When a round's tokens outnumber") < before.index("τ > k̄")          # words first

    events, rounds = mixed_run()
    state = RunState(events + vanilla(10))
    c = measured_costs(state.clasp, state.vanilla)
    after = primer_md(state.clasp, state.vanilla)
    assert NOT_YET not in after
    assert f"cost **{c.r_verify:.2f}** plain steps" in after
    assert f"= **{c.round_cost:.2f}**: it paid" in after
    assert f"M = 1 of L = {L}: **{c.r_draft:.2f}** of a full step" in after

    plain = [rnd(i, 1 + i, drafted=(), accepted=0, k_max=0) for i in range(9)]
    never = RunState([prefill(auto=True), *plain, done(plain, tokens_per_s=11.2)] + vanilla(10))
    text = primer_md(never.clasp, never.vanilla)
    assert text.count("this run drafted nothing") == 3 and "no drafting: both sides decoded plainly" in text
    assert "speedup" not in text.split("**This run:**")[1]


def test_the_projection_uses_the_gpu_costs_measured_and_says_why_the_papers_70b_sits_above():
    from html import unescape

    from ui.views.costs_view import projection_html

    text = unescape(projection_html())
    assert "one DP 5.6 full steps" in text and "one DP 5.8 full steps" in text       # BENCHMARKS.md, H200
    assert "<th>H200 costs, LOI 128</th>" in text and "0.41×–0.59×" in text          # 8B at LOI 1, measured costs
    assert "Why the paper's 1.67× for LLaMA-3-70B sits above both projections at LOI 128" in text
    assert "1.24× for LLaMA-3-8B" not in text              # the 8B figure sits inside the projected range

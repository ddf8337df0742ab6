"""The slow-motion replay in Teach: a finished run's rounds as frames, with no model."""
from html import unescape

from clasp_core.settings import GenConfig
from clasp_core.trace import Prefill, Round
from ui.views.replay import PAUSE, PLAY, frames, replay_html, replay_tick
from ui.views.state import RunState


def run(temperature=0.0):
    pre = Prefill(method="clasp", model="toy", num_layers=4, prompt_ids=[1], prompt_text="p",
                  config=GenConfig(temperature=temperature, max_new_tokens=16), seconds=0.1, first_token=5,
                  first_text="A")
    r0 = Round(index=0, skip=[1, 2], drafted=[6, 7], drafted_text=[" b", " c"], draft_probs=[0.9, 0.6],
               target_probs=[0.8, 0.1], accepted=1, next_token=8, next_text=" C", next_kind="corrected",
               emitted=[6, 8], draft_s=0.01, verify_s=0.02, start=1, k_max=2, choice=0)
    r1 = Round(index=1, skip=[], drafted=[], drafted_text=[], draft_probs=[], target_probs=[], accepted=0,
               next_token=9, next_text=" d", next_kind="bonus", emitted=[9], draft_s=0.0, verify_s=0.02, start=3,
               k_max=0)
    return RunState([pre, r0, r1])


def test_a_round_plays_as_pending_drafts_then_the_verdict_then_the_appended_token():
    view = run().clasp
    fs = frames(view)
    assert [(f.round, f.phase, f.shown) for f in fs] == [(0, "draft", 1), (0, "draft", 2), (0, "verify", 0),
                                                         (0, "append", 0), (1, "append", 0)]
    pending = replay_html(view, 1)
    assert pending.count("rp-pending") == 2 and "q 0.90" in pending and "q 0.60" in pending
    assert "tok-accepted" not in pending                      # nothing judged yet
    verdict = unescape(replay_html(view, 2))
    assert "p 0.80 q 0.90 ✓" in verdict and "p 0.10 q 0.60 ✗" in verdict
    assert "not the full model's top choice: rejected" in verdict
    appended = replay_html(view, 3)
    assert "tok-corrected" in appended and " C" in appended
    plain = replay_html(view, 4)
    assert "plain step" in plain and "A b C" in plain          # the output so far, before round 2's token


def test_the_rounds_column_is_lit_on_the_mini_layer_map():
    view = run().clasp
    html = replay_html(view, 0)
    lit = html.split("rp-map")[1].count("rp-lit")
    assert lit == 4                                            # one column of L = 4 layers
    assert html.count("background:#7c3aed") == 2               # round 1 skipped layers 1 and 2


def test_sampled_runs_show_the_ratio_rule():
    assert "min(1, p/q) = 0.89" in replay_html(run(temperature=0.7).clasp, 2)


def test_the_timer_steps_frames_and_stops_at_the_end():
    state = run()
    pos, _, timer, label = replay_tick(state, 1)
    assert pos == 2 and timer.active and label == PAUSE
    pos, html, timer, label = replay_tick(state, 4)
    assert pos == 5 and not timer.active and label == PLAY and "round 2 of 2" in html


def test_slow_motion_follows_the_round_selected_in_teach():
    import gradio  # noqa: F401  (the registry builds gradio updates)

    from ui.serving.handlers import STEPPED
    from ui.views.registry import VIEWS, Snapshot

    state = RunState(run().events)
    by = {v.name: v for v in VIEWS}
    snap = Snapshot(state, current=1)                           # Teach shows round 2
    assert "round 2 of 2 · frame" in unescape(by["replay"].render(snap))
    first = next(i for i, f in enumerate(frames(state.clasp)) if f.round == 1)
    assert by["replay_pos"].render(snap)["value"] == first + 1
    assert {"replay", "replay_pos"} <= set(STEPPED)         # the round selector re-renders both

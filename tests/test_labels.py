"""Every label on the page says what happened: small synthetic traces, one per mislabel found."""
import pytest

from clasp_core.settings import GenConfig
from clasp_core.trace import Done, LayerChoice, Prefill, Round, Step
from ui.views.dp_view import dp_figure, used_skip_sizes
from ui.views.layer_map import layer_map_figure, refresh_rounds
from ui.views.palette import FIGURE_LAYOUT
from ui.views.rounds import round_kind, rounds_dataframe
from ui.views.state import RunState
from ui.views.teaching import explain_round
from ui.views.timing import segments, timeline_figure
from ui.views.tokens import token_html

L = 4


def prefill(method="clasp", **params):
    return Prefill(method=method, model="toy", num_layers=L, prompt_ids=[1], prompt_text="p",
                   config=GenConfig(**{"temperature": 0, "max_new_tokens": 32, "det": 0.7, **params}), seconds=0.1,
                   first_token=5, first_text="A")


def rnd(index, start, skip=(1,), drafted=(6,), accepted=1, emitted=None, next_kind="bonus", k_max=None, choice=-1):
    drafted = list(drafted)
    emitted = list(drafted[:accepted]) + [9] if emitted is None else list(emitted)
    return Round(index=index, skip=list(skip), drafted=drafted, drafted_text=[f"d{t}" for t in drafted],
                 draft_probs=[0.9] * len(drafted), target_probs=[0.8] * len(drafted), accepted=accepted,
                 next_token=9, next_text="N", next_kind=next_kind, emitted=emitted, draft_s=0.01, verify_s=0.02,
                 start=start, k_max=len(drafted) if k_max is None else k_max, choice=choice)


def flags_table():
    """A DP table over L=4 layers, M=2, whose best set for M=2 is {1, 2} and for M=1 is {2}."""
    f = [[False] * 3 for _ in range(L + 1)]
    f[2][1] = True      # g(2,1) came from skipping layer 1
    f[3][2] = True      # g(3,2) from skipping layer 2 on top of g(2,1)
    f[3][1] = True      # g(3,1) from skipping layer 2 (M=1 path)
    return f


def choice(round_, skip, M, flags=None, path=None):
    D = [[1.0, None, None]] + [[1.0, 0.9, 0.8 if i >= 2 else None] for i in range(1, L + 1)]
    return LayerChoice(round=round_, position=3, skip=skip, D=D, path=path or [[4, M], [0, 0]], seconds=0.01,
                       num_skip=M, flags=flags)


def test_dp_view_draws_the_path_of_the_set_the_draft_used():
    # auto: the DP ran for M=2, but the rounds under it drafted with M=1 (skip {2})
    c = choice(1, [1, 2], 2, flags_table(), path=[[4, 2], [3, 2], [2, 1], [1, 0], [0, 0]])
    state = RunState([prefill(auto=True), rnd(0, 1, skip=(), drafted=(), accepted=0, k_max=0), c,
                      rnd(1, 2, skip=(2,), choice=0), rnd(2, 4, skip=(2,), choice=0)])
    view = state.clasp
    assert used_skip_sizes(view, c) == [1]
    fig = dp_figure(c, used_skip_sizes(view, c))
    paths = {t.name: list(zip(t.y, t.x)) for t in fig.data[1:]}
    assert set(paths) == {"path for M = 2", "path for M = 1"}
    # the M=1 path goes diagonal exactly at layer 2 (row 2 -> 3): the set the draft used
    m1 = paths["path for M = 1"]
    assert (3, 1) in m1 and (2, 0) in m1


def test_a_bonus_cut_by_the_token_limit_is_not_described_as_added():
    # all 2 drafts accepted, but only 1 token fitted before max_new_tokens: no bonus was emitted
    state = RunState([prefill(), rnd(0, 1, drafted=(6, 7), accepted=2, emitted=[6])])
    text = explain_round(state.clasp, 0)
    assert "bonus token" not in text and "1 token(s) were added" in text
    df = rounds_dataframe(state.clasp)
    assert df["kind"].tolist() == ["cut"] and df["added"].tolist() == [1]
    assert df["full model's token"].tolist() == [""]
    assert [t.kind for t in state.clasp.tokens()] == ["plain", "accepted"]


def test_layer_map_draws_the_first_dp_line_in_auto_mode():
    # auto: plain steps first, then the first DP before round 3 (index 2)
    events = [prefill(auto=True), rnd(0, 1, skip=(), drafted=(), accepted=0, k_max=0),
              rnd(1, 2, skip=(), drafted=(), accepted=0, k_max=0), choice(2, [1], 1),
              rnd(2, 3, skip=(1,), choice=0)]
    view = RunState(events).clasp
    assert refresh_rounds(view) == [2]
    fig = layer_map_figure(view)
    assert [x for x in fig.data[1].x if x is not None] == [2.5, 2.5]     # between page rounds 2 and 3


def test_plain_steps_of_a_clasp_run_are_not_drawn_as_verify():
    events = [prefill(auto=True), rnd(0, 1, skip=(), drafted=(), accepted=0, k_max=0), choice(1, [1], 1),
              rnd(1, 2, skip=(1,), choice=0)]
    view = RunState(events).clasp
    kinds = [k for k, _, _ in segments(view)]
    assert kinds == ["prefill", "plain step", "layer DP", "draft", "verify"]
    assert {t.name for t in timeline_figure(view, None).data} == {"prefill", "plain step", "layer DP", "draft",
                                                                  "verify"}


def test_a_det_stop_is_neither_plain_nor_verify_of_drafts():
    r = rnd(0, 1, skip=(1,), drafted=(), accepted=0, k_max=4)     # the draft ran once, below DET
    view = RunState([prefill(), r]).clasp
    assert round_kind(r) == "below DET"
    assert "below the confidence threshold" in explain_round(view, 0)


def test_a_round_cut_at_det_has_one_name_one_colour_and_one_count_everywhere():
    from html import unescape

    from ui.views.analysis import accepted_histogram
    from ui.views.costs_view import measured_costs
    from ui.views.palette import BELOW_DET
    from ui.views.replay import frames, replay_html

    det = rnd(1, 3, skip=(1,), drafted=(), accepted=0, k_max=4)           # the draft ran once, below DET
    events = [prefill(), rnd(0, 1, drafted=(6,), accepted=1), det, rnd(2, 4, drafted=(6,), accepted=1)]
    state = RunState(events + [prefill("vanilla"), *(Step(index=i, token=5, text="x", seconds=0.02)
                                                     for i in range(1, 6))])
    view = state.clasp
    tokens = unescape(token_html(view))
    assert 'data-kind="det"' in tokens and "below DET" in tokens                   # Tokens tab: its own kind
    assert "below DET (draft discarded)" in tokens                                  # ... and its legend entry
    last = frames(view).index(next(f for f in frames(view) if f.round == 1))
    slow = unescape(replay_html(view, last))
    assert "Below DET" in slow and "No draft this round" not in slow and "tok-det" in slow
    assert round_kind(det) == "below DET" and "below DET" in rounds_dataframe(view)["kind"].tolist()
    teach = explain_round(view, 1, measured_costs(state.clasp, state.vanilla))
    assert "Below DET" in teach and "draft 10 ms + check 20 ms" in teach          # its draft time is priced
    hist = accepted_histogram(view)
    assert [t.name for t in hist.data] == ["drafted", "below DET"] and hist.data[1].y == [1]
    assert hist.data[1].marker["color"] == BELOW_DET and "(3)" in hist.layout.title["text"]


def test_the_same_token_has_the_same_number_in_both_streams():
    clasp = [prefill(), rnd(0, 1, drafted=(6,), accepted=1)]              # tokens #1 (draft) and #2 (bonus)
    vanilla = [prefill("vanilla"), Step(index=1, token=6, text="d6", seconds=0.01),
               Step(index=2, token=9, text="N", seconds=0.01)]
    state = RunState(clasp + vanilla)
    c, v = token_html(state.clasp), token_html(state.vanilla)
    for n in (0, 1, 2):
        assert f"token #{n} " in c and f"token #{n} " in v
    assert "round 1" in c and "round 0" not in c                       # rounds count from 1 on the page
    assert "round 1" not in v and "round 0" not in v                  # vanilla has steps, not rounds


def test_teach_opens_on_the_first_round():
    import gradio  # noqa: F401  (the registry builds gradio updates)

    from ui.views.registry import VIEWS, Snapshot

    state = RunState([prefill(), rnd(0, 1), rnd(1, 3), rnd(2, 5)])
    step = next(v for v in VIEWS if v.name == "step").render(Snapshot(state))
    assert step["value"] == 1 and step["maximum"] == 3
    assert explain_round(state.clasp, 0).startswith("**Round 1 of 3.**")


def test_plain_round_sentence_names_its_real_cause():
    # auto off, a plain round because one token was left (max_new_tokens 2, round starts at output 1)
    off = RunState([Prefill(method="clasp", model="toy", num_layers=L, prompt_ids=[1], prompt_text="p",
                            config=GenConfig(temperature=0, max_new_tokens=2, auto=False), seconds=0.1,
                            first_token=5, first_text="A"),
                    rnd(0, 1, skip=(), drafted=(), accepted=0, k_max=0)])
    text = explain_round(off.clasp, 0)
    assert "auto" not in text and "only one token was left" in text
    on = RunState([prefill(auto=True), rnd(0, 1, skip=(), drafted=(), accepted=0, k_max=0)])
    assert "auto chose a plain step" in explain_round(on.clasp, 0)


def test_figures_read_on_dark_pages():
    fig = layer_map_figure(RunState([prefill(), rnd(0, 1)]).clasp, current=0)
    assert fig.layout.paper_bgcolor == FIGURE_LAYOUT["paper_bgcolor"] == "rgba(0,0,0,0)"
    outline = fig.layout.shapes[0].line.color
    assert outline.lower() not in ("#111827", "black", "#000000")


def test_state_is_built_incrementally_and_matches_a_rebuild():
    events = [prefill(), rnd(0, 1), rnd(1, 3), Done(method="clasp", new_tokens=5, output_ids=[5, 6, 9, 6, 9],
                                                    text="", wall_s=1.0, decode_s=0.9, prefill_s=0.1,
                                                    tokens_per_s=5.0, stop_reason="max_new_tokens")]
    live = RunState()
    seen = []
    for e in events:
        live.add(e)
        seen.append(len(live.clasp.tokens()))
    assert seen == [1, 3, 5, 5]
    assert [t.text for t in live.clasp.tokens()] == [t.text for t in RunState(events).clasp.tokens()]


@pytest.mark.parametrize("auto", [True, False])
def test_knob_notes_say_what_auto_overrides(auto):
    from ui.serving.handlers import knob_notes

    det, loi, seed = knob_notes(auto)
    assert ("not used while auto is on" in (det["info"] or "")) == auto
    assert ("untick auto for reproducible" in seed["info"]) == auto


def test_m_slider_follows_the_model_in_memory(monkeypatch):
    from types import SimpleNamespace

    from ui.serving.handlers import APP, page_opened

    monkeypatch.setattr(APP.models, "models", {})
    assert page_opened()["maximum"] == 29            # nothing loaded yet: the default model's range
    monkeypatch.setattr(APP.models, "models", {("org/tiny", "cpu", "float32"): SimpleNamespace(num_layers=3)})
    opened = page_opened()
    assert opened["maximum"] == 2 and "L = 3" in opened["label"]


def test_a_token_inside_a_character_shows_no_replacement_or_placeholder():
    # "欢" is split by byte-level BPE: the first token's piece is "", the second carries the character
    events = [prefill("vanilla"), Step(index=1, token=40, text="", seconds=0.01),
              Step(index=2, token=41, text="欢", seconds=0.01)]
    html = token_html(RunState(events).vanilla, legend=False)
    assert "\ufffd" not in html and "∅" not in html and "欢" in html
    assert "part of a character" in html


def test_auto_is_switched_off_and_says_why_for_choices_without_a_dp():
    from ui.serving.handlers import auto_for_strategy

    off = auto_for_strategy("early-exit", True)
    assert off["value"] is False and off["interactive"] is False and "early-exit" in off["info"]
    on = auto_for_strategy("clasp-once", False)
    assert on["interactive"] is True and "value" not in on

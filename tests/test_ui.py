"""The views, built from a recorded trace (assets/example-trace.jsonl) and small synthetic ones."""
from pathlib import Path

import pytest

from clasp_core import trace
from clasp_core.settings import GenConfig
from clasp_core.trace import Done, LayerChoice, Prefill, Round, Step
from ui.analysis import accepted_histogram, jaccard, jaccard_by_distance, persistence_figure
from ui.dp_view import dp_figure
from ui.layer_map import PLAIN_ROUND, layer_map_figure, skip_matrix
from ui.rounds import rounds_dataframe
from ui.state import build_view, is_plain, views_by_method
from ui.teaching import explain_round
from ui.timing import lossless_state, parting, segments, summary_html, timeline_figure, timing_html
from ui.tokens import token_html

TRACE = Path(__file__).resolve().parents[1] / "assets" / "example-trace.jsonl"


@pytest.fixture(scope="module")
def views():
    return views_by_method(trace.read_trace(TRACE))


def test_recorded_trace_has_both_runs(views):
    assert set(views) == {"clasp", "vanilla"}
    c = views["clasp"]
    assert c.done and c.rounds and c.choices and c.num_layers == 30


def test_tokens_cover_the_output_with_rejections_in_place(views):
    c = views["clasp"]
    toks = c.tokens()
    emitted = [t for t in toks if t.emitted]
    assert len(emitted) == c.done.new_tokens
    rejected = [t for t in toks if t.kind == "rejected"]
    assert len(rejected) == sum(1 for r in c.rounds if r.accepted < len(r.drafted))
    for i, t in enumerate(toks):            # every rejected draft is followed by the full model's correction
        if t.kind == "rejected":
            assert toks[i + 1].kind == "corrected" and toks[i + 1].round == t.round
    assert sum(t.kind == "bonus" for t in toks) == sum(1 for r in c.rounds if r.drafted and r.next_kind == "bonus")


def test_token_html_spans_and_labels(views):
    c = views["clasp"]
    html = token_html(c)
    assert html.count('<span class="tok ') == len(c.tokens())
    assert 'class="tok tok-rejected"' in html and 'class="tok tok-accepted"' in html
    assert "draft q(x) =" in html and "skipped layers:" in html
    for label in ("draft accepted", "draft rejected", "corrected by full model", "bonus token"):
        assert label in html
    assert "legend" not in token_html(views["vanilla"], legend=False)
    assert "tok-current" in token_html(c, highlight_round=2)


def test_layer_map_cells(views):
    c = views["clasp"]
    fig = layer_map_figure(c, current=3)
    z = fig.data[0].z
    assert len(z) == 30 and all(len(row) == len(c.rounds) for row in z)
    assert sum(v == 1 for row in z for v in row) == sum(len(r.skip) for r in c.rounds)
    for col, r in enumerate(c.rounds):
        assert [layer for layer in range(30) if z[layer][col] == 1] == r.skip
        assert all(z[layer][col] == PLAIN_ROUND for layer in range(30)) == is_plain(r)
    lines = fig.data[1]                      # the DP refresh lines, one trace, None-separated
    assert sum(x is None for x in lines.x) == len(c.choices) - 1
    outline = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(outline) == 1 and outline[0].x0 == c.rounds[3].index + 1 - 0.5     # rounds shown from 1
    assert skip_matrix(c) == [list(row) for row in z]


def test_dp_figure_table_and_path(views):
    choice = views["clasp"].choices[0]
    fig = dp_figure(choice)
    heat, path = fig.data
    assert len(heat.z) == 31 and len(heat.z[0]) == choice.num_skip + 1
    assert (path.x[0], path.y[0]) == (choice.num_skip, 30) and (path.x[-1], path.y[-1]) == (0, 0)
    assert str(choice.skip) in fig.layout.title.text


def test_timing_numbers_and_lossless_mark(views):
    c, v = views["clasp"], views["vanilla"]
    html = timing_html(c, v)
    assert "lossless-ok" in html and f"{c.done.tokens_per_s / v.done.tokens_per_s:.2f}×" in html
    segs = segments(c)
    total = sum(s for _, _, s in segs)
    expected = c.prefill.seconds + sum(x.seconds for x in c.choices) + sum(r.draft_s + r.verify_s for r in c.rounds)
    assert total == pytest.approx(expected)
    assert {k for k, _, _ in segs} == {"prefill", "layer DP", "draft", "verify", "plain step"}
    # a round where no draft ran is a plain full-model step, not a verification
    assert sum(k == "plain step" for k, _, _ in segs) == sum(is_plain(r) for r in c.rounds) >= 1
    assert sum(k == "verify" for k, _, _ in segs) == sum(not is_plain(r) for r in c.rounds)
    line = summary_html(c, v)
    assert "lossless-ok" in line and f"{c.done.tau:.2f}" in line
    lanes = {d.y[0] for d in timeline_figure(c, v).data}
    assert lanes == {"CLaSp", "vanilla"}


def test_lossless_warning_when_outputs_differ(views):
    events = trace.read_trace(TRACE)
    vanilla_done = [e for e in events if isinstance(e, Done) and e.method == "vanilla"][0]
    vanilla_done.output_ids = vanilla_done.output_ids[:5] + [0] + vanilla_done.output_ids[6:]
    w = views_by_method(events)
    state, msg = lossless_state(w["clasp"], w["vanilla"])
    assert state == "mismatch" and "token 5" in msg
    assert "lossless-mismatch" in timing_html(w["clasp"], w["vanilla"])


def parted_runs(clasp_top):
    """A one-round CLaSp run and a vanilla run of bfloat16 that part at token #1 (vanilla: 5, CLaSp: 6);
    ``clasp_top``: CLaSp's full-model top two there."""
    def prefill(method):
        return Prefill(method, "m", 4, [1], "p", GenConfig(temperature=0.0), 0.1, 3, "a", dtype="bfloat16",
                       top_ids=[3, 4], top_logits=[20.0, 15.0])

    clasp = [prefill("clasp"), Round(0, [1], [6], ["b"], [0.9], [0.9], 1, 7, "c", "bonus", [6, 7], 0.1, 0.1, 1,
                                     top_ids=[clasp_top[0], [7, 8]], top_logits=[clasp_top[1], [20.0, 10.0]]),
             Done("clasp", 3, [3, 6, 7], "abc", 1.0, 0.9, 0.1, 3.0, "max_new_tokens", rounds=1)]
    vanilla = [prefill("vanilla"), Step(1, 5, "x", 0.1, [5, 6], [19.875, 19.875]),
               Step(2, 9, "y", 0.1, [9, 1], [20.0, 10.0]),
               Done("vanilla", 3, [3, 5, 9], "axy", 1.0, 0.9, 0.1, 3.0, "max_new_tokens")]
    return views_by_method(clasp + vanilla)


def test_a_rounding_tie_is_explained_and_marked_in_both_streams():
    w = parted_runs(([6, 5], [20.0, 19.9375]))
    state, msg = lossless_state(w["clasp"], w["vanilla"])
    assert state == "tie"
    assert ("part at token #1, where the full model's two best candidates were 0.062 apart, within bfloat16 "
            "rounding") in msg and "Both continuations are valid greedy outputs" in msg
    assert "lossless-tie" in timing_html(w["clasp"], w["vanilla"])
    assert "rounding" in summary_html(w["clasp"], w["vanilla"])
    assert parting(w["clasp"], w["vanilla"]).position == 1
    for view in (w["clasp"], w["vanilla"]):
        html = token_html(view, parting=1)
        assert html.count("tok-parting") == 1 and "part here" in html


def test_a_parting_beyond_rounding_is_shown_as_an_error():
    w = parted_runs(([5, 6], [20.0, 19.9375]))       # CLaSp emitted 6 though its full model ranked 5 first
    state, msg = lossless_state(w["clasp"], w["vanilla"])
    assert state == "error" and msg.startswith("Error:") and "did not rank first" in msg
    assert "lossless-error" in timing_html(w["clasp"], w["vanilla"])


def test_round_table(views):
    c = views["clasp"]
    df = rounds_dataframe(c)
    assert len(df) == len(c.rounds)
    assert df["accepted"].tolist() == [r.accepted for r in c.rounds]
    assert df["tau so far"].iloc[-1] == pytest.approx(c.done.tau, abs=0.01)


def test_analyses(views):
    c = views["clasp"]
    jd = jaccard_by_distance(c)
    assert 1 in jd and all(0.0 <= x <= 1.0 for x in jd.values())
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    hist = accepted_histogram(c).data[0]
    assert sum(hist.y) == sum(1 for r in c.rounds if r.drafted)
    assert persistence_figure(c).data[0].x[0] == 1


def test_teaching_sentences(views):
    c = views["clasp"]
    rej = next(i for i, r in enumerate(c.rounds) if r.drafted and r.accepted < len(r.drafted))
    assert "rejected" in explain_round(c, rej) and f"Round {c.rounds[rej].index + 1} of" in explain_round(c, rej)
    full = [i for i, r in enumerate(c.rounds) if r.drafted and r.accepted == len(r.drafted)]
    if full:
        assert "bonus token" in explain_round(c, full[0])
    assert "Run a prompt" in explain_round(None, 0)


def synthetic():
    """Two rounds: one fully accepted, one cut at EOS after its first accepted draft token."""
    return [
        Prefill(method="clasp", model="toy", num_layers=4, prompt_ids=[1], prompt_text="p", config=GenConfig(),
                seconds=0.1, first_token=5, first_text="A"),
        LayerChoice(round=0, position=0, skip=[1], D=[[1.0, None]] + [[1.0, 0.9]] * 4, path=[[4, 1], [3, 1], [2, 1],
                    [1, 0], [0, 0]], seconds=0.01, num_skip=1),
        Round(index=0, skip=[1], drafted=[6, 7], drafted_text=["B", "C"], draft_probs=[0.9, 0.8],
              target_probs=[0.95, 0.7], accepted=2, next_token=8, next_text="D", next_kind="bonus",
              emitted=[6, 7, 8], draft_s=0.02, verify_s=0.03, start=1),
        Round(index=1, skip=[1], drafted=[2, 9], drafted_text=["</s>", "E"], draft_probs=[0.9, 0.8],
              target_probs=[0.9, 0.5], accepted=2, next_token=3, next_text="F", next_kind="bonus",
              emitted=[2], draft_s=0.02, verify_s=0.03, start=4),
    ]


def test_tokens_stop_at_an_eos_cut():
    v = build_view(synthetic())
    assert [(t.text, t.kind) for t in v.tokens()] == [("A", "plain"), ("B", "accepted"), ("C", "accepted"),
                                                      ("D", "bonus"), ("</s>", "accepted")]


def test_the_summary_and_timing_table_name_the_draft_source(views):
    """A run of another draft source is named as such, not "CLaSp" (the trace's config says which)."""
    import dataclasses

    c, v = views["clasp"], views["vanilla"]
    assert c.source == "CLaSp" and v.source == "vanilla"
    assert summary_html(c, v).startswith('<div class="summary">CLaSp <b>')
    def as_source(strategy):
        return dataclasses.replace(c.prefill, config=dataclasses.replace(c.prefill.config, strategy=strategy))

    lookup = build_view([as_source("lookup"), *c.rounds, *c.steps, c.done])
    assert lookup.source == "prompt lookup"
    assert summary_html(lookup, v).startswith('<div class="summary">prompt lookup <b>')
    assert "<th>prompt lookup</th><th>vanilla</th>" in timing_html(lookup, v)
    once = build_view([as_source("clasp-once"), *c.rounds, c.done])
    assert once.source == "DP once"


def test_live_figures_are_valid_plotly(views):
    """The live figures skip plotly.py's validation on the page (ui.figure); here every one of them,
    empty and from the recorded trace, is built again as a validated plotly figure, and what the page
    receives is that figure's JSON."""
    import json

    import gradio as gr

    from ui.compare import compare_figure, remember
    from ui.figure import Figure
    from ui.state import RunState

    c, v = views["clasp"], views["vanilla"]
    state = RunState(trace.read_trace(TRACE))
    figures = [layer_map_figure(c, current=2), layer_map_figure(None), dp_figure(c.choices[0], [c.choices[0].num_skip]),
               dp_figure(None), timeline_figure(c, v), timeline_figure(None, None), persistence_figure(c),
               persistence_figure(None), accepted_histogram(c), accepted_histogram(None),
               compare_figure(remember(None, state), state), compare_figure(None, None)]
    for fig in figures:
        assert isinstance(fig, Figure)
        checked = fig.to_plotly()                          # raises on a property plotly does not know
        assert checked.layout.title.text == fig.layout.title.text
        assert [t.type for t in checked.data] == [t.type for t in fig.data]
        sent = gr.Plot().postprocess(fig)
        assert sent.type == "plotly" and json.loads(sent.plot) == json.loads(fig.to_json())
    assert timeline_figure(c, v).layout.xaxis.title.text == "seconds"
    assert dp_figure(c.choices[0]).layout.yaxis.autorange == "reversed"
    second = compare_figure(remember(None, state), state).layout.yaxis2       # every axis gets the grid style
    assert second.linecolor == timeline_figure(c, v).layout.xaxis.linecolor and second.title.text == "acceptance"

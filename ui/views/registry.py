"""The view registry: every view of the page is one entry here (a module renders it, one line lists it).

A ``View`` says in which tab it sits, how its component is made and how a ``Snapshot`` of the run
becomes the component's value. ``live`` views are cheap and refreshed at every streamed snapshot;
the others (figures, tables) are refreshed when the render budget allows and once at the end.
To add a view: write its render function in a module of ``ui/`` and add one ``View(...)`` line below.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from .analysis import accepted_histogram, persistence_figure, persistence_note
from .compare import compare_dataframe, compare_figure, conclusion, strategy_choices, strategy_help
from .costs_view import cost_html, measured_costs
from .dp_view import READING_GUIDE, choice_label, dp_figure, used_skip_sizes
from .layer_map import layer_map_figure
from .primer import primer_md
from .replay import replay_controls, replay_html, replay_range, round_frame
from .rounds import LEGEND as ROUNDS_LEGEND
from .rounds import rounds_dataframe
from .state import RunState
from .sweep_view import HELP as SWEEP_HELP
from .sweep_view import sweep_figure
from .teaching import ACCEPTANCE_RULE, explain_round
from .timing import parting, summary_html, timeline_figure, timing_html
from .tokens import token_html


@dataclass
class Snapshot:
    """What the views are rendered from: the runs so far and the round being looked at."""

    state: RunState = field(default_factory=RunState)
    current: int | None = None          # 0-based round highlighted in the step-through (None: none)
    choice: int | None = None           # DP table shown (index into the CLaSp run's choices; None: latest)
    history: list = field(default_factory=list)   # summaries of this visitor's finished runs (ui.compare)

    @property
    def clasp(self):
        return self.state.clasp

    @property
    def vanilla(self):
        return self.state.vanilla


@dataclass(frozen=True)
class View:
    name: str
    tab: str
    make: Callable[[], gr.Component]
    render: Callable[[Snapshot], Any]
    live: bool = False
    row: str | None = None              # views of one tab sharing a row name sit side by side


@dataclass(frozen=True)
class Tab:
    name: str
    help: str


TABS = [
    Tab("Tokens", "Each output token, coloured by where it came from. Struck-through red tokens were drafted and "
                  "rejected; the orange token after one is the full model's correction. Hover a token for its "
                  "position, round, draft probability q and full-model probability p."),
    Tab("Layers", "One column per round, one row per decoder layer. Purple cells are the layers the draft skipped; "
                  "a light column is a plain full-model step (no draft ran). A dotted line marks where a skip set "
                  "chosen by the layer DP came into force. The orange outline marks the round selected in Teach."),
    Tab("DP table", "The layer DP's table for one of its runs. Pick a run of the DP below."),
    Tab("Timing", "The same prompt decoded by plain (vanilla) decoding right after the drafting run, on the same "
                  "device. "
                  "At temperature 0 both outputs must be identical. Below the timeline, the cost model says why "
                  "this speedup came out, and where the same algorithm wins."),
    Tab("Rounds", "One row per draft-verify round. Download the trace to replay it here later without a model."),
    Tab("Teach", "Step through the rounds; the sentence below says what happened in each one."),
    Tab("Compare", "Run the same prompt with another *draft source* (pick it below and press *Run this source*, "
                   "or change it on the left), or press *Run all*: each finished run adds a row. The verdict and the "
                   "chart compare only runs of this prompt with the same settings (every one that changes speed, LOI "
                   "included); earlier prompts stay in the table, grouped by prompt."),
]


ANALYSIS_HELP = (
    "**Two of the paper's analyses, on this run.** Left: how much the skip sets of rounds *d* apart overlap, as "
    "the Jaccard similarity |A ∩ B| / |A ∪ B| (1 = the same layers); the note under the plots says what this "
    "run's curve supports. Right: how many draft tokens each round got accepted.")


REPLAY_HELP = (
    "**Slow motion.** Press ▶ to replay the run (or a loaded trace) one moment at a time: the draft's tokens "
    "appear *pending* (dashed) with their probability q, the full model marks each accepted or rejected "
    "(p, q and the rule), then its correction or bonus token is appended. On the right, the round's column of "
    "the layer map is lit (purple: skipped layers).")


# ---- render functions that combine views of ui/ ---------------------------------------------------
def _highlight(s: Snapshot) -> int | None:
    if s.current is None or not s.clasp or not s.clasp.rounds:
        return None
    return s.clasp.rounds[min(s.current, len(s.clasp.rounds) - 1)].index


def _parting(s: Snapshot) -> int | None:
    """The token where CLaSp and vanilla part, marked in both streams (None: they agree, or not done)."""
    d = parting(s.clasp, s.vanilla)
    return d.position if d is not None else None


def _choice(s: Snapshot):
    choices = s.clasp.choices if s.clasp else []
    if not choices:
        return None
    return choices[-1] if s.choice is None else choices[min(s.choice, len(choices) - 1)]


def _dp_choices(s: Snapshot):
    labels = [choice_label(c) for c in (s.clasp.choices if s.clasp else [])]
    c = _choice(s)
    value = choice_label(c) if c is not None else None
    return gr.update(choices=labels, value=value)


def _dp_table(s: Snapshot):
    c = _choice(s)
    return dp_figure(c, used_skip_sizes(s.clasp, c) if c is not None else None)


def _step(s: Snapshot):
    n = len(s.clasp.rounds) if s.clasp else 0
    return gr.update(minimum=1, maximum=max(2, n), value=(s.current or 0) + 1, interactive=n > 1)


def _step_controls():
    """The round slider between ◀ and ▶ (the buttons come back as extra components for the wiring)."""
    with gr.Row():
        prev = gr.Button("◀ previous", size="sm", elem_id="prev-btn")
        slider = gr.Slider(1, 2, value=1, step=1, label="round", interactive=False, elem_id="teach-step")
        nxt = gr.Button("next ▶", size="sm", elem_id="next-btn")
    return slider, {"prev": prev, "next": nxt}


TOP = "top"                             # views above the tabs (the primer): app.py lays them out via build_top

VIEWS = [
    View("primer", TOP, lambda: gr.Markdown(primer_md(None, None), elem_id="primer"),
         lambda s: primer_md(s.clasp, s.vanilla)),
    View("summary", "Tokens", lambda: gr.HTML("", elem_id="summary"), lambda s: summary_html(s.clasp, s.vanilla),
         live=True),
    View("tokens", "Tokens", lambda: gr.HTML(token_html(None), elem_id="tokens-clasp"),
         lambda s: token_html(s.clasp, highlight_round=_highlight(s), parting=_parting(s)), live=True),
    View("vanilla_head", "Tokens", lambda: gr.Markdown("**Vanilla** (plain decoding, for comparison)",
                                                       elem_classes="help"), None),
    View("tokens_vanilla", "Tokens", lambda: gr.HTML(token_html(None, legend=False), elem_id="tokens-vanilla"),
         lambda s: token_html(s.vanilla, legend=False, parting=_parting(s)), live=True),
    View("layer_map", "Layers", lambda: gr.Plot(layer_map_figure(None), elem_id="layer-map"),
         lambda s: layer_map_figure(s.clasp, current=s.current)),
    View("dp_choice", "DP table", lambda: gr.Dropdown([], label="run of the layer DP", elem_id="dp-choice"),
         _dp_choices),
    View("dp_table", "DP table", lambda: gr.Plot(dp_figure(None), elem_id="dp-table"), _dp_table),
    View("dp_guide", "DP table", lambda: gr.Markdown(READING_GUIDE, elem_classes="help"), None),
    View("timing", "Timing", lambda: gr.HTML(timing_html(None, None), elem_id="timing"),
         lambda s: timing_html(s.clasp, s.vanilla), live=True),
    View("timeline", "Timing", lambda: gr.Plot(timeline_figure(None, None), elem_id="timeline"),
         lambda s: timeline_figure(s.clasp, s.vanilla)),
    View("costs", "Timing", lambda: gr.HTML(cost_html(None, None), elem_id="costs"),
         lambda s: cost_html(s.clasp, s.vanilla)),
    View("rounds", "Rounds", lambda: gr.Dataframe(rounds_dataframe(None), interactive=False, elem_id="rounds"),
         lambda s: rounds_dataframe(s.clasp)),
    View("rounds_legend", "Rounds", lambda: gr.Markdown(ROUNDS_LEGEND, elem_classes="help"), None),
    View("step", "Teach", _step_controls, _step),
    View("explanation", "Teach", lambda: gr.Markdown(explain_round(None, 0), elem_id="explanation"),
         lambda s: explain_round(s.clasp, s.current or 0, measured_costs(s.clasp, s.vanilla))),
    View("rule", "Teach", lambda: gr.Markdown(ACCEPTANCE_RULE, elem_classes="help"), None),
    View("replay_help", "Teach", lambda: gr.Markdown(REPLAY_HELP, elem_classes="help"), None),
    View("replay_pos", "Teach", replay_controls, lambda s: replay_range(s.clasp, s.current)),
    View("replay", "Teach", lambda: gr.HTML(replay_html(None), elem_id="replay"),
         lambda s: replay_html(s.clasp, round_frame(s.clasp, s.current))),
    View("analysis_help", "Teach", lambda: gr.Markdown(ANALYSIS_HELP, elem_classes="help"), None),
    View("persistence", "Teach", lambda: gr.Plot(persistence_figure(None)), lambda s: persistence_figure(s.clasp),
         row="plots"),
    View("histogram", "Teach", lambda: gr.Plot(accepted_histogram(None)), lambda s: accepted_histogram(s.clasp),
         row="plots"),
    View("persistence_note", "Teach", lambda: gr.Markdown("", elem_id="persistence-note"),
         lambda s: persistence_note(s.clasp)),
    View("sweep_help", "Teach", lambda: gr.Markdown(SWEEP_HELP, elem_classes="help"), None),
    View("sweep", "Teach", lambda: gr.Plot(sweep_figure(), elem_id="sweep"), None),
    View("strategies", "Teach", lambda: gr.Markdown(strategy_help(), elem_classes="help"), None),
    View("compare_pick", "Compare", lambda: gr.Dropdown(strategy_choices(), value="random", label="draft source",
                                                      elem_id="compare-pick", scale=3), None, row="compare-run"),
    View("compare_run_one", "Compare", lambda: gr.Button("Run this source (this prompt and settings)", size="sm",
                                                         elem_id="run-one-btn", scale=1), None, row="compare-run"),
    View("compare_run_all", "Compare", lambda: gr.Button(f"Run all {len(strategy_choices())} draft sources (this "
                                                         "prompt, M, K, DET and LOI, auto off)", size="sm",
                                                         elem_id="run-all-btn", scale=1), None, row="compare-run"),
    View("compare_verdict", "Compare", lambda: gr.Markdown(conclusion(None, None), elem_id="compare-verdict"),
         lambda s: conclusion(s.history, s.state)),
    View("compare_table", "Compare", lambda: gr.Dataframe(compare_dataframe(None, None), interactive=False,
                                                          elem_id="compare"),
         lambda s: compare_dataframe(s.history, s.state)),
    View("compare_plot", "Compare", lambda: gr.Plot(compare_figure(None, None), elem_id="compare-plot"),
         lambda s: compare_figure(s.history, s.state)),
    View("compare_help", "Compare", lambda: gr.Markdown(strategy_help(), elem_classes="help"), None),
]
def render(views: dict[str, gr.Component], snap: Snapshot, heavy: bool = True) -> dict:
    """{component: value} for the live views, and for the others too when ``heavy``."""
    return {views[v.name]: v.render(snap) for v in VIEWS if v.render and (heavy or v.live) and v.name in views}


def build_top() -> dict[str, gr.Component]:
    """The views above the tabs (inside a gr.Blocks), in an open accordion; returns them by view name."""
    with gr.Accordion("CLaSp in four sentences, with this run's numbers", open=True, elem_id="primer-box"):
        return {v.name: v.make() for v in VIEWS if v.tab == TOP}


def build_tabs() -> dict[str, gr.Component]:
    """Lay out the tabs and their views (inside a gr.Blocks); returns the components by view name
    (plus the extra controls some views make, e.g. the step buttons "prev" and "next")."""
    made: dict[str, gr.Component] = {}

    def make(v: View) -> None:
        out = v.make()
        made[v.name], extras = out if isinstance(out, tuple) else (out, {})
        made.update(extras)

    with gr.Tabs():
        for tab in TABS:
            with gr.Tab(tab.name, id=f"tab-{tab.name.lower().replace(' ', '-')}"):
                gr.Markdown(tab.help, elem_classes="help")
                views = [v for v in VIEWS if v.tab == tab.name]
                done: set[str] = set()
                for v in views:
                    if v.name in done:
                        continue
                    group = [w for w in views if v.row and w.row == v.row] or [v]
                    if len(group) > 1:
                        with gr.Row():
                            for w in group:
                                make(w)
                    else:
                        make(v)
                    done.update(w.name for w in group)
    return made

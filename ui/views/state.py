"""A run as the views need it, built event by event, also while it is still streaming.

``RunView`` is one run (CLaSp or vanilla); ``RunState`` holds the runs of one request and is fed one
event at a time, so a snapshot never re-reads the whole event list. Rounds are numbered from 1 on
the page (``Round.index + 1``); tokens by their output position (token #0 comes from the prefill).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from clasp_core.settings import GenConfig
from clasp_core.strategies import short_name
from clasp_core.trace import Done, Event, LayerChoice, Prefill, Round, Step


@dataclass
class Token:
    text: str
    kind: str                 # accepted | rejected | corrected | bonus | plain
    round: int | None         # the round it came from (0-based Round.index; None: prefill or a vanilla step)
    position: int = 0         # output position it was emitted at (or proposed for, if rejected)
    prob: float | None = None     # draft probability q(x) for drafted tokens
    target: float | None = None   # full-model probability p(x) for drafted tokens
    skip: list[int] | None = None
    emitted: bool = True      # False for rejected drafts (shown, not part of the output)
    source: dict | None = None    # a copied draft: the round's prompt-lookup match (Round.lookup)
    offset: int = 0           # a copied draft: its place in the copied span


def round_tokens(r: Round) -> list[Token]:
    """A round's tokens as shown: accepted drafts, the first rejected one, then the full model's token.

    Only what was emitted counts: a round cut by EOS or the token limit shows no token past the cut.
    """
    out: list[Token] = []
    n_emit = len(r.emitted)
    for i, _ in enumerate(r.drafted):
        kind = "accepted" if i < r.accepted else "rejected"
        if kind == "accepted" and i >= n_emit:
            break                                  # cut by EOS or the token limit
        out.append(Token(r.drafted_text[i], kind, r.index, r.start + i, r.draft_probs[i], r.target_probs[i],
                         r.skip, emitted=kind == "accepted", source=getattr(r, "lookup", None), offset=i))
        if kind == "rejected":
            break                                  # later drafts were never looked at
    if n_emit > r.accepted:
        kind = r.next_kind if r.drafted else ("det" if is_below_det(r) else "plain")
        out.append(Token(r.next_text, kind, r.index, r.start + r.accepted, skip=r.skip or None))
    return out


def is_below_det(r: Round) -> bool:
    """The round's draft ran, but its first guess fell below DET: a drafting round that drafted nothing
    (its draft step cost time, it produced 0 tokens; the full model's step made the round's token)."""
    return r.drafting and not r.drafted and not r.copied


def is_copied(r: Round) -> bool:
    """The round's drafts were copied from the context (prompt lookup), not drafted by skipping layers."""
    return r.copied


def is_plain(r: Round) -> bool:
    """The round ran no draft at all: a full-model step (defined once, as ``Round.plain``)."""
    return r.plain


@dataclass
class RunView:
    prefill: Prefill | None = None
    choices: list[LayerChoice] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    done: Done | None = None
    _tokens: list[Token] = field(default_factory=list, repr=False)

    @property
    def method(self) -> str:
        return self.prefill.method if self.prefill else ""

    @property
    def source(self) -> str:
        """The draft source's name for the page ("CLaSp", "prompt lookup", ...; "vanilla" for a plain run)."""
        if self.method != "clasp":
            return self.method
        return short_name(self.config.strategy or "clasp")

    @property
    def num_layers(self) -> int:
        return self.prefill.num_layers if self.prefill else 0

    @property
    def config(self) -> GenConfig:
        """The run's settings (the defaults before its Prefill arrives)."""
        return self.prefill.config if self.prefill else GenConfig()

    def add(self, e: Event) -> None:
        if isinstance(e, Prefill):
            self.prefill = e
            self._tokens.append(Token(e.first_text, "plain", None, 0))
        elif isinstance(e, LayerChoice):
            self.choices.append(e)
        elif isinstance(e, Round):
            self.rounds.append(e)
            self._tokens.extend(round_tokens(e))
        elif isinstance(e, Step):
            self.steps.append(e)
            self._tokens.append(Token(e.text, "plain", None, e.index))
        elif isinstance(e, Done):
            self.done = e

    def tokens(self) -> list[Token]:
        """Every output token in order, rejected drafts placed where they were replaced."""
        return self._tokens

    def choice_for(self, r: Round) -> LayerChoice | None:
        """The layer choice in force for round r."""
        i = getattr(r, "choice", -1)
        if i is not None and 0 <= i < len(self.choices):
            return self.choices[i]
        earlier = [c for c in self.choices if c.round <= r.index]
        return earlier[-1] if earlier else None


class RunState:
    """The runs of one request (CLaSp, then vanilla on the same prompt), fed one event at a time."""

    def __init__(self, events: list[Event] | None = None):
        self.events: list[Event] = []
        self.runs: dict[str, RunView] = {}
        self._current: RunView | None = None
        for e in events or []:
            self.add(e)

    def add(self, e: Event) -> None:
        self.events.append(e)
        if isinstance(e, Prefill):
            self._current = self.runs[e.method] = RunView()
        if self._current is not None:
            self._current.add(e)

    @property
    def clasp(self) -> RunView | None:
        return self.runs.get("clasp")

    @property
    def vanilla(self) -> RunView | None:
        return self.runs.get("vanilla")


def build_view(events: list[Event]) -> RunView:
    v = RunView()
    for e in events:
        v.add(e)
    return v


def views_by_method(events: list[Event]) -> dict[str, RunView]:
    """A trace may hold a clasp run and a vanilla run of the same prompt."""
    return RunState(events).runs

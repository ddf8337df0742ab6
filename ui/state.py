"""A run as the views need it: built once from the event list, also while it is still streaming."""
from __future__ import annotations

from dataclasses import dataclass, field

from clasp_core.trace import Done, Event, LayerChoice, Prefill, Round, Step, split_runs


@dataclass
class Token:
    text: str
    kind: str                 # accepted | rejected | corrected | bonus | plain
    round: int | None         # the round it came from (None: prefill)
    prob: float | None = None     # draft probability q(x) for drafted tokens
    target: float | None = None   # full-model probability p(x) for drafted tokens
    skip: list[int] | None = None
    emitted: bool = True      # False for rejected drafts (shown, not part of the output)


@dataclass
class RunView:
    prefill: Prefill | None = None
    choices: list[LayerChoice] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    done: Done | None = None

    @property
    def method(self) -> str:
        return self.prefill.method if self.prefill else ""

    @property
    def num_layers(self) -> int:
        return self.prefill.num_layers if self.prefill else 0

    def add(self, e: Event) -> None:
        if isinstance(e, Prefill):
            self.prefill = e
        elif isinstance(e, LayerChoice):
            self.choices.append(e)
        elif isinstance(e, Round):
            self.rounds.append(e)
        elif isinstance(e, Step):
            self.steps.append(e)
        elif isinstance(e, Done):
            self.done = e

    def tokens(self) -> list[Token]:
        """Every output token in order, rejected drafts placed where they were replaced."""
        out: list[Token] = []
        if self.prefill is None:
            return out
        out.append(Token(self.prefill.first_text, "plain", None))
        for s in self.steps:
            out.append(Token(s.text, "plain", s.index))
        for r in self.rounds:
            n_emit = len(r.emitted)
            for i, t in enumerate(r.drafted):
                kind = "accepted" if i < r.accepted else "rejected"
                if kind == "accepted" and i >= n_emit:
                    break           # cut by EOS or the token limit
                out.append(Token(r.drafted_text[i], kind, r.index, r.draft_probs[i], r.target_probs[i],
                                 r.skip, emitted=kind == "accepted"))
                if kind == "rejected":
                    break           # later drafts were never looked at
            if n_emit > r.accepted:
                kind = "plain" if not r.drafted else r.next_kind
                out.append(Token(r.next_text, kind, r.index, skip=r.skip))
        return out

    def output_text(self) -> str:
        return "".join(t.text for t in self.tokens() if t.emitted)

    def skip_at(self, round_index: int) -> list[int]:
        for r in self.rounds:
            if r.index == round_index:
                return r.skip
        return []


def build_view(events: list[Event]) -> RunView:
    v = RunView()
    for e in events:
        v.add(e)
    return v


def views_by_method(events: list[Event]) -> dict[str, RunView]:
    """A trace may hold a clasp run and a vanilla run of the same prompt."""
    return {run[0].method: build_view(run) for run in split_runs(events) if isinstance(run[0], Prefill)}

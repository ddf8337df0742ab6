"""The events a decoding loop yields, and their JSON-lines form.

This is the contract between the engine and everything that shows or sums its work
(the app, the bench, trace files). Every event is a small dataclass with a ``kind``;
``to_dict``/``event_from_dict`` round-trip it through plain JSON types, so a trace file
can be replayed without a model.

Token texts travel with the ids (``*_text`` fields), so a viewer never needs the tokenizer.
They are decoded incrementally (detok.py): a token that ends inside a character (byte-level
BPE splits CJK, emoji, accents) has the piece "" and the token completing it carries the whole
character. The pieces of the emitted tokens (Prefill.first_text, Step.text, and in each Round
drafted_text[:accepted] and next_text where emitted) followed by Done.tail_text concatenate to
exactly ``tokenizer.decode(output_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)``:
special tokens such as the EOS keep their text there; Done.text drops them. Pieces of tokens
that were not emitted (rejected drafts) are the text they would have added after the accepted
prefix of their round.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .settings import GenConfig

TRACE_VERSION = 1


@dataclass
class Prefill:
    """The prompt went through the full model once."""

    method: str                    # "clasp" | "vanilla"
    model: str                     # display name of the model
    num_layers: int                # L
    prompt_ids: list[int]
    prompt_text: str               # the prompt after the chat template
    config: GenConfig              # the settings of this run, M resolved (vanilla: its sampling and length only)
    seconds: float
    first_token: int               # the full model's first new token, from the prefill's last row
    first_text: str                # (output index 0; rounds/steps continue from index 1)
    device: str = "cpu"
    dtype: str = "float32"
    # greedy runs: the full model's two best candidates where each emitted token was chosen, argmax
    # first ([id, id] and [logit, logit]; see ties.py); empty when sampling or in an older trace
    top_ids: list[int] = field(default_factory=list)
    top_logits: list[float] = field(default_factory=list)
    # what was done before the run's clock started: graph_capture_s, and the strategy's own report (the static
    # search's static_search_s, static_how, ...)
    setup: dict = field(default_factory=dict)
    kind: str = "prefill"


@dataclass
class LayerChoice:
    """The layers were chosen (by the DP, or another strategy) for the rounds from ``round`` on.

    ``skip``, ``path`` and ``num_skip`` describe the set round ``round`` really drafts with: with
    auto that is the DP's set for the M auto planned (backtracked from the same table), and where
    that round is a plain full-model step, the set for the largest M (GenConfig.num_skip). Later
    rounds may use another m of the same table: each Round.skip is the set it used.
    """

    round: int                     # index of the first round that drafts with this skip set
    position: int                  # position p of the token whose hidden states fed the DP
    skip: list[int]                # layers to skip (sorted, 0-based), num_skip of them
    D: list[list[float | None]]    # (L+1) x (M+1); D[i][j] = cos(g(i,j), x_i); None where undefined; [] without DP
    path: list[list[int]]          # backtracked cells [i, j] from (L, num_skip) down to (0, 0); [] without DP
    seconds: float                 # time the run spent choosing (an offline search is not in it)
    num_skip: int = 0              # the m of ``skip`` (auto may draft with fewer layers skipped than M)
    strategy: str = "clasp"        # clasp | clasp-once | static | early-exit | random
    flags: list[list[bool]] | None = None   # (L+1) x (M+1): g(i, j) came from "skip layer i-1"; None without DP
    # clasp-fused: the DP ran inside a verification's layer calls; its share of that pass cannot be timed
    # apart, so ``seconds`` is 0 and the cost is inside that round's verify_s
    fused: bool = False
    kind: str = "layer_choice"


@dataclass
class Round:
    """One draft-then-verify round of CLaSp."""

    index: int
    skip: list[int]                # skip set the draft ran with
    drafted: list[int]             # draft token ids (may be empty: the round was a plain step)
    drafted_text: list[str]
    draft_probs: list[float]       # q(x) of each drafted token under the draft
    target_probs: list[float]      # p(x) of each drafted token under the full model, up to the first
                                   # rejected one (a greedy CPU verification computes no row after it)
    accepted: int                  # how many of ``drafted`` were accepted (a prefix)
    next_token: int                # the full model's own token after the accepted prefix
    next_text: str
    next_kind: str                 # "corrected" (a draft token was rejected) | "bonus" (all accepted)
    emitted: list[int]             # ids appended to the output this round (after EOS / max cut)
    draft_s: float
    verify_s: float
    start: int                     # output index of the round's first emitted token
    k_max: int | None = None       # K planned for the round (0: a plain full-model step; None: an older trace)
    choice: int = -1               # index (within this run) of the LayerChoice in force; -1 before the first
    auto: dict | None = None       # auto's reasons for this round (AutoPolicy.note): measured costs, predictions
    top_ids: list[list[int]] = field(default_factory=list)      # per emitted token, as in Prefill (greedy)
    top_logits: list[list[float]] = field(default_factory=list)
    # where the drafts came from: None = the skipped-layer draft (``skip``), else the prompt-lookup match:
    # {n, ngram, start, copied_from, length, in_prompt}; positions index the context, prompt then output
    lookup: dict | None = None
    # host synchronisations with the device in the round, from its plan to its keep (clock.HostSyncs);
    # None where not counted (unless CLASP_COUNT_SYNCS=1); the layer choice after the round is not in it
    syncs: int | None = None
    kind: str = "round"

    # "Did this round draft?" is answered here, once, for every module and view.
    @property
    def plain(self) -> bool:
        """No draft was planned: a full-model step (auto's choice, or the last token left)."""
        return self.k_max == 0 if self.k_max is not None else (not self.drafted and not self.skip)

    @property
    def copied(self) -> bool:
        """The round's drafts were copied from the context (prompt lookup), not drafted by skipping layers."""
        return bool(self.lookup)

    @property
    def draft_steps(self) -> int:
        """Draft forward passes the round ran: its drafts, plus one whose guess fell below DET. A copied
        draft (prompt lookup) runs none: it costs only its verification."""
        if self.copied:
            return 0
        n = len(self.drafted)
        if self.k_max is None:                # a trace from before k_max: a skip set but no drafts = one DET stop
            return n or int(bool(self.skip) and self.draft_s > 0)
        # fewer than K drafts: the last step's guess fell below DET (or the draft wrote EOS)
        return n + 1 if n < self.k_max and self.draft_s > 0 else n

    @property
    def drafting(self) -> bool:
        """The round drafted: it ran at least one draft step (its drafts may all have been discarded below
        DET), or it copied drafts from the context."""
        return self.draft_steps > 0 or self.copied


@dataclass
class Step:
    """One token of plain (vanilla) decoding."""

    index: int
    token: int
    text: str
    seconds: float
    top_ids: list[int] = field(default_factory=list)            # as in Prefill (greedy)
    top_logits: list[float] = field(default_factory=list)
    kind: str = "step"


@dataclass
class Done:
    """Totals of one run."""

    method: str
    new_tokens: int
    output_ids: list[int]
    text: str
    wall_s: float                  # prefill + decoding, excluding model load and warm-up
    decode_s: float                # decoding only (after prefill)
    prefill_s: float
    tokens_per_s: float            # new_tokens / wall_s
    stop_reason: str               # "eos" | "max_new_tokens" | "stopped"
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    tau: float = 0.0               # mean tokens emitted per round (accepted + 1)
    draft_s: float = 0.0
    verify_s: float = 0.0
    dp_s: float = 0.0
    dp_calls: int = 0
    tail_text: str = ""            # text held back at the end (a run stopped inside a character)
    kind: str = "done"


Event = Prefill | LayerChoice | Round | Step | Done
EVENT_TYPES = {cls.__dataclass_fields__["kind"].default: cls
               for cls in (Prefill, LayerChoice, Round, Step, Done)}
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in EVENT_TYPES.values()}


def to_dict(event: Event) -> dict:
    """The event's fields by name. Shallow (no event holds another dataclass): ``dataclasses.asdict``'s deep
    copy of the DP tables made writing a run's trace cost 45 ms of the page's final snapshot."""
    d = {name: getattr(event, name) for name in _FIELDS[type(event)]}
    if isinstance(event, Prefill):
        d["config"] = dataclasses.asdict(event.config)
    return d


def event_from_dict(d: dict) -> Event:
    kind = d.get("kind")
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown trace event kind {kind!r}; expected one of {sorted(EVENT_TYPES)}")
    cls = EVENT_TYPES[kind]
    fields = {name: d[name] for name in _FIELDS[cls] if name in d}
    if cls is Prefill:
        fields.update(prefill_settings(d))
    return cls(**fields)


def prefill_settings(d: dict) -> dict:
    """A Prefill record's config (typed) and setup; an older trace kept both in one ``params`` dict."""
    if "params" in d:
        params = d["params"]
        config = GenConfig.from_dict(params)
        return dict(config=config, setup={k: v for k, v in params.items() if k not in config.__dataclass_fields__})
    return dict(config=GenConfig(**d.get("config", {})), setup=d.get("setup", {}))


def dumps(events: Iterable[Event]) -> str:
    """JSON lines, one event a line, headed by a version line."""
    lines = [json.dumps({"kind": "trace", "version": TRACE_VERSION})]
    lines += [json.dumps(to_dict(e), ensure_ascii=False) for e in events]
    return "\n".join(lines) + "\n"


def loads(text: str) -> list[Event]:
    events: list[Event] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"trace line {n} is not JSON: {e}") from None
        if d.get("kind") == "trace":
            if d.get("version") != TRACE_VERSION:
                raise ValueError(f"trace version {d.get('version')} is not supported (expected {TRACE_VERSION})")
            continue
        events.append(event_from_dict(d))
    return events


def write_trace(events: Iterable[Event], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(dumps(events), encoding="utf-8")
    return path


def read_trace(path: str | Path) -> list[Event]:
    return loads(Path(path).read_text(encoding="utf-8"))


def split_runs(events: Iterable[Event]) -> Iterator[list[Event]]:
    """Split a trace holding several runs (e.g. clasp then vanilla) at each Prefill."""
    run: list[Event] = []
    for e in events:
        if isinstance(e, Prefill) and run:
            yield run
            run = []
        run.append(e)
    if run:
        yield run

"""Vanilla and CLaSp decoding loops over one Runner; both yield trace events.

``generate`` validates everything first (clear ValueErrors), then returns the event iterator.
Greedy CLaSp is token-identical to greedy decoding; at temperature > 0 the speculative
sampling rule keeps the output distribution exactly the target's (see sampling.py).

A round's parts are plain functions over a runner, tensors and ids in, tokens out: ``draft``,
``copy_draft``, ``verify`` (no clock, no tokenizer). ``Run``/``ClaspRun`` are the loops: they time each part,
keep the accepted tokens and let ``Recorder`` turn what happened into events. One CLaSp loop
serves every way of choosing layers (``GenConfig.strategy``, see strategies.py) and both
policies (fixed settings or auto, see auto.py): each round plans (M, K), drafts, verifies with
the full model, and chooses layers again when the strategy says so.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import torch

from .auto import Arm, AutoPolicy, FixedPolicy, Policy, head_share
from .clock import Clock
from .dp_static import verify_with_dp
from .layer_dp import DPResult
from .lookup import CopyPolicy, Match, NgramIndex
from .metrics import dtype_name, tau
from .model import LoadedModel
from .output import Output
from .prompt import encode_prompt
from .runner import Runner
from .sampling import greedy_accept, sample, speculative_accept, warp
from .settings import GenConfig
from .strategies import Choice, Strategy, make_strategy
from .ties import top_two
from .trace import Done, Event, LayerChoice, Prefill, Round, Step

METHODS = ("clasp", "vanilla")
__all__ = ["METHODS", "GenConfig", "generate", "draft", "copy_draft", "verify"]


# ---- entry point -------------------------------------------------------------------------
def generate(lm: LoadedModel, prompt: str | None, cfg: GenConfig, method: str = "clasp",
             stop: threading.Event | None = None, *, prompt_ids: list[int] | None = None,
             chat: bool = True) -> Iterator[Event]:
    """Validate, then return the event iterator of one run (``method``: clasp | vanilla).

    Every layer-choice strategy runs as method "clasp" (``cfg.strategy`` picks it)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    cfg = cfg.resolved(lm.num_layers)
    if prompt_ids is None:
        ids, text = encode_prompt(lm, prompt, chat)
    else:
        if not prompt_ids:
            raise ValueError("the prompt is empty: type something to continue")
        ids, text = list(prompt_ids), prompt or ""
    need = len(ids) + cfg.max_new_tokens
    if need > lm.max_context:
        raise ValueError(f"the prompt has {len(ids)} tokens; with {cfg.max_new_tokens} new tokens that is "
                         f"{need}, over this model's context of {lm.max_context}: shorten the prompt or "
                         f"ask for fewer tokens")
    runner = lm.runner
    runner.allocate(need + cfg.draft_len + cfg.num_skip + 2)
    capture_s = runner.prepare(cfg.draft_len + 1)       # CUDA graphs, captured before any clock starts
    if method == "vanilla":
        return Run(lm, cfg, method, ids, text, stop, capture_s).vanilla()
    return ClaspRun(lm, cfg, method, ids, text, stop, capture_s).clasp()


# ---- the parts of a round: tensors and ids in, tokens out (no clock, no tokenizer) ----------
@dataclass
class Sampler:
    """Greedy (temperature 0) or sampling from the warped distribution with the run's generator."""

    temperature: float
    top_p: float
    gen: torch.Generator | None     # None when greedy

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def pick(self, logits: torch.Tensor) -> int:
        """The token after the last row of ``logits``."""
        if self.greedy:
            return int(logits[-1].argmax())
        return sample(warp(logits[-1], self.temperature, self.top_p), self.gen)

    def tops(self, logits: torch.Tensor) -> dict:
        """Greedy runs record the full model's two best candidates at each row (ties.py reads them)."""
        if not self.greedy:
            return dict(top_ids=[], top_logits=[])
        ids, vals = top_two(logits)
        return dict(top_ids=ids, top_logits=vals)

    def top_of_last(self, logits: torch.Tensor) -> dict:
        """``tops`` of the last row alone, for an event of one token (Prefill, Step)."""
        return {k: v[0] if v else v for k, v in self.tops(logits[-1:]).items()}


@dataclass
class Draft:
    tokens: list[int]
    q_rows: list[torch.Tensor]      # the draft's distribution at each drafted token
    q_x: list[float]                # q(x) of each drafted token
    steps: int                      # draft forwards run (one more than tokens when DET stopped it)
    source: Match | None = None     # set when the tokens were copied from the context (lookup.py)


@dataclass
class Verdict:
    accepted: int                   # drafted tokens accepted (a prefix)
    next: int                       # the full model's own token after them
    kind: str                       # "corrected" | "bonus"
    p_x: list[float]                # p(x) of each drafted token under the full model
    states: torch.Tensor | None     # per-layer states of the verified block, when layers are chosen next
    top_ids: list = field(default_factory=list)     # greedy: the full model's top two at each emitted position
    top_logits: list = field(default_factory=list)
    dp: DPResult | None = None      # clasp-fused: the layer DP that rode this verification


def ids_on(runner: Runner, xs: list[int]) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.long, device=runner.device)


def draft(runner: Runner, last: int, pos: int, skip: frozenset, k_max: int, det: float, sampler: Sampler,
          eos: set[int]) -> Draft:
    """Up to k_max tokens after ``last`` (at ``pos``) from the layer-skipping draft; stops when its top-1
    prob < DET."""
    tokens, q_rows, q_x = [], [], []
    cur = last
    steps = 0
    for k in range(max(0, k_max)):
        steps += 1
        logits = runner.forward(ids_on(runner, [cur]), pos + k, skip, last_only=True)[-1]
        if sampler.greedy:
            q = torch.softmax(logits.float(), -1)
            conf, tok = (float(v) for v in q.max(-1))
            tok = int(tok)
        else:
            q = warp(logits, sampler.temperature, sampler.top_p)
            tok = sample(q, sampler.gen)
            conf = float(q.max())
        if conf < det:
            break
        tokens.append(tok)
        q_rows.append(q)
        q_x.append(float(q[tok]))
        if tok in eos:
            break
        cur = tok
    return Draft(tokens, q_rows, q_x, steps)


def copy_draft(match: Match, k: int, eos: set[int], sampler: Sampler, vocab: int, device) -> Draft:
    """The first k tokens of ``match``, cut after an EOS. A copy is certain, so when sampling its q is
    one-hot: accepted with probability p(x), replaced from norm(max(0, p - q)), still exact."""
    tokens = match.tokens[:k]
    end = next((i for i, t in enumerate(tokens) if t in eos), None)
    if end is not None:
        tokens = tokens[:end + 1]
    match = replace(match, tokens=tokens)
    q_rows = [] if sampler.greedy else list(torch.nn.functional.one_hot(
        torch.tensor(tokens, dtype=torch.long, device=device), vocab).float())
    return Draft(tokens, q_rows, [1.0] * len(tokens), 0, match)


def verify(runner: Runner, last: int, pos: int, drafted: Draft, sampler: Sampler, states: bool,
           ride: torch.Tensor | None = None, num_skip: int = 0) -> Verdict:
    """The full model over ``last`` (at ``pos``) and the draft: how many drafts it accepts, and its own next.
    ``ride``: the states [L+1, d] of the token at pos - 1, whose layer DP (M = ``num_skip``) runs in the same
    layer calls (clasp-fused); the Verdict then carries its result."""
    tokens, k = drafted.tokens, len(drafted.tokens)
    ids, block, dp = ids_on(runner, tokens), ids_on(runner, [last] + tokens), None
    if ride is None:
        res = runner.forward(block, pos, hidden=states, head=False)
        y, hs = res if states else (res, None)
    else:
        y, hs, dp = verify_with_dp(runner, block, pos, ride, num_skip, hidden=states, head=False)
    logits = runner.verify_logits(y, tokens if sampler.greedy and k > 0 else None)
    if sampler.greedy:
        acc, nxt, kind = greedy_accept(tokens, logits.argmax(-1).tolist())
        seen = min(k, len(logits))                   # rows past the first rejection may never be computed
        p_x = torch.softmax(logits[:seen].float(), -1)[torch.arange(seen), ids[:seen]].tolist() if k else []
    else:
        p = warp(logits, sampler.temperature, sampler.top_p)
        q = torch.stack(drafted.q_rows) if k else p[:0]
        acc, nxt, kind = speculative_accept(tokens, q, p, sampler.gen)
        p_x = p[torch.arange(k), ids].tolist() if k else []
    return Verdict(acc, nxt, kind, p_x, hs, **sampler.tops(logits[:acc + 1]), dp=dp)


# ---- what the loop keeps between rounds ----------------------------------------------------
@dataclass
class Totals:
    """What the rounds add up to; Done is built from it."""

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    draft_s: float = 0.0
    verify_s: float = 0.0
    dp_s: float = 0.0
    dp_calls: int = 0

    def add_round(self, drafted: Draft, verdict: Verdict, draft_s: float, verify_s: float) -> None:
        self.rounds += 1
        self.drafted += len(drafted.tokens)
        self.accepted += verdict.accepted
        self.draft_s += draft_s
        self.verify_s += verify_s


@dataclass
class Plan:
    """What one round does: draft up to ``k_max`` tokens without the layers in ``skip`` (``arm``: auto's
    pick of M; None for a copy or a plain step), or take ``copy``; ``again``: choose layers after it."""

    arm: Arm | None
    k_max: int
    skip: frozenset
    note: dict | None               # auto's reasons, told in the Round event
    copy: Draft | None
    copy_s: float                   # seconds spent finding the copy
    again: bool


@dataclass
class Loop:
    """Where a CLaSp run stands between rounds."""

    layers: Strategy                # the layer-choice strategy (strategies.py)
    policy: Policy                  # FixedPolicy | AutoPolicy (auto.py)
    copier: CopyPolicy
    index: NgramIndex | None        # the context's n-grams, for strategies that copy
    pos: int                        # position of the newest token (not yet in the cache)
    choice: Choice | None = None    # the layers chosen last
    planned: tuple[Arm | None, int, float] | None = None    # the next round's plan, made with the layer choice
    choices: int = 0                # layer choices so far
    rounds: int = 0
    since: int = 0                  # rounds since the last layer choice
    riding: torch.Tensor | None = None  # clasp-fused: states of the token whose DP rides the next verification


# ---- the events, built in one place ------------------------------------------------------------
class Recorder:
    """Turns what the loop did into trace events, with the texts a viewer shows (output.py decodes them)."""

    def __init__(self, lm: LoadedModel, cfg: GenConfig, method: str, prompt_ids: list[int], prompt_text: str,
                 output: Output, sampler: Sampler):
        self.lm, self.cfg, self.method, self.output, self.sampler = lm, cfg, method, output, sampler
        self.prompt_ids, self.prompt_text = prompt_ids, prompt_text
        self.totals = Totals()

    def prefill(self, first: int, logits: torch.Tensor, seconds: float, setup: dict) -> Prefill:
        """The run's first event: its settings, typed (a vanilla run keeps its sampling and length only), and
        the work done before its clock (``setup``)."""
        cfg = self.cfg if self.method == "clasp" else GenConfig(
            temperature=self.cfg.temperature, top_p=self.cfg.top_p, seed=self.cfg.seed,
            max_new_tokens=self.cfg.max_new_tokens)
        runner = self.lm.runner
        return Prefill(method=self.method, model=self.lm.name, num_layers=runner.num_layers,
                       prompt_ids=list(self.prompt_ids), prompt_text=self.prompt_text, config=cfg,
                       seconds=seconds, first_token=first, first_text=self.output.commit([first])[0],
                       device=str(runner.device), dtype=dtype_name(runner.dtype),
                       **self.sampler.top_of_last(logits), setup=setup)

    def step(self, tok: int, logits: torch.Tensor, seconds: float) -> Step:
        return Step(index=len(self.output.ids) - 1, token=tok, text=self.output.commit([tok])[0], seconds=seconds,
                    **self.sampler.top_of_last(logits))

    def round(self, loop: Loop, plan: Plan, drafted: Draft, verdict: Verdict, emitted: list[int],
              draft_s: float, verify_s: float) -> Round:
        acc, copy = verdict.accepted, plan.copy
        drafted_text, next_text = self.output.round_texts(drafted.tokens, acc, verdict.next, len(emitted))
        return Round(
            index=loop.rounds, skip=sorted(plan.skip) if drafted.steps else [], drafted=drafted.tokens,
            drafted_text=drafted_text, draft_probs=drafted.q_x, target_probs=verdict.p_x, accepted=acc,
            next_token=verdict.next, next_text=next_text, next_kind=verdict.kind, emitted=emitted,
            draft_s=draft_s, verify_s=verify_s, start=len(self.output.ids) - len(emitted),
            k_max=plan.k_max, choice=loop.choices - 1, auto=plan.note, top_ids=verdict.top_ids[:len(emitted)],
            top_logits=verdict.top_logits[:len(emitted)],
            lookup=self.copy_record(copy.source, loop.index) if copy is not None else None)

    def copy_record(self, match: Match, index: NgramIndex, around: int = 8) -> dict:
        """The trace's record of a copy, with the texts a viewer shows: a few tokens before the earlier
        n-gram, the n-gram, the copied span and a few tokens after it (decoded here: no viewer needs the tokenizer)."""
        rec = match.record(len(self.prompt_ids))
        tok, ctx = self.lm.tokenizer, index.context
        if tok is not None:
            s, c, e = match.start, match.copied_from, match.copied_from + len(match.tokens)
            rec.update(before=tok.decode(ctx[max(0, s - around):s]), ngram_text=tok.decode(ctx[s:c]),
                       copied_text=tok.decode(ctx[c:e]), after=tok.decode(ctx[e:e + around]))
        return rec

    def layer_choice(self, choice: Choice, arm: Arm | None, round_index: int, p: int,
                     fused: bool = False) -> LayerChoice:
        """The set the next round drafts with: skip_for(arm.M), or the full-M set if it is a plain step."""
        m = arm.M if arm is not None else self.cfg.num_skip
        skip, path = choice.for_m(m)
        dp = choice.dp
        return LayerChoice(round=round_index, position=p, skip=skip, D=dp.D if dp else [], path=path,
                           seconds=choice.seconds, num_skip=m, strategy=choice.strategy,
                           flags=dp.flags if dp else None, fused=fused)

    def done(self, reason: str, wall: float, prefill_s: float) -> Done:
        n = len(self.output.ids)
        return Done(method=self.method, new_tokens=n, output_ids=list(self.output.ids), text=self.output.text(),
                    wall_s=wall, decode_s=wall - prefill_s, prefill_s=prefill_s,
                    tokens_per_s=n / wall if wall > 0 else 0.0, stop_reason=reason,
                    tau=tau(n, self.totals.rounds), tail_text=self.output.tail(), **asdict(self.totals))


# ---- the loops: each part of a round timed, its event emitted ------------------------------------
class Run:
    """One generation: its output, clock and events; the vanilla loop times each step and emits it."""

    def __init__(self, lm: LoadedModel, cfg: GenConfig, method: str, ids: list[int], text: str,
                 stop: threading.Event | None, capture_s: float = 0.0):
        self.lm, self.runner, self.cfg, self.prompt_ids = lm, lm.runner, cfg, ids
        self.eos = set(lm.eos_ids)
        gen = None if cfg.temperature == 0 else torch.Generator(device=self.runner.device).manual_seed(cfg.seed)
        self.sampler = Sampler(cfg.temperature, cfg.top_p, gen)
        self.output = Output(lm.tokenizer, self.eos, cfg.max_new_tokens, stop)
        self.clock = Clock(self.runner.device)
        self.capture_s = capture_s          # CUDA graphs captured before the run: reported apart
        self.record = Recorder(lm, cfg, method, ids, text, self.output, self.sampler)
        self.totals = self.record.totals
        self.prefill_s = 0.0

    def prefill(self, hidden: bool, setup: dict) -> tuple[Prefill, torch.Tensor | None]:
        t0 = self.clock.now()
        res = self.runner.forward(ids_on(self.runner, self.prompt_ids), 0, hidden=hidden, last_only=True)
        logits, hs = res if hidden else (res, None)
        first = self.sampler.pick(logits)
        self.output.ids.append(first)
        self.prefill_s = self.clock.now() - t0
        self.clock.start = t0
        setup = {**setup, "graph_capture_s": self.capture_s}       # reported apart, never inside wall time
        return self.record.prefill(first, logits, self.prefill_s, setup), hs

    # vanilla: one full forward per token
    def vanilla(self) -> Iterator[Event]:
        ev, _ = self.prefill(hidden=False, setup={})
        yield from self.clock.emit(ev)
        out, pos = self.output, len(self.prompt_ids)
        while (reason := out.finished()) is None:
            t0 = self.clock.now()
            logits = self.runner.forward(ids_on(self.runner, out.ids[-1:]), pos, last_only=True)
            tok = self.sampler.pick(logits)
            out.ids.append(tok)
            pos += 1
            seconds = self.clock.now() - t0
            yield from self.clock.emit(self.record.step(tok, logits, seconds))
        yield self.record.done(reason, self.clock.wall(), self.prefill_s)



class ClaspRun(Run):
    """A CLaSp run: each round plans, drafts, verifies with the full model, keeps what it accepts, and
    chooses the skipped layers again when the strategy says so."""

    def clasp(self) -> Iterator[Event]:
        cfg, M, runner = self.cfg, self.cfg.num_skip, self.runner
        layers = make_strategy(cfg.strategy, cfg.seed)
        setup = layers.prepare(self.lm, M)                  # e.g. the static search: before any clock
        policy: Policy = (AutoPolicy(runner.num_layers, M, cfg.draft_len, head_share(self.lm.model))
                          if cfg.auto else FixedPolicy(M, cfg.draft_len, cfg.det))
        at_prefill = policy.choose_at_prefill and layers.drafts
        ev, hs = self.prefill(hidden=at_prefill and layers.uses_dp, setup=setup)
        policy.observe_prefill(self.prefill_s, len(self.prompt_ids))
        yield from self.clock.emit(ev)
        loop = Loop(layers, policy, CopyPolicy(cfg.auto), pos=len(self.prompt_ids),
                    index=NgramIndex(self.prompt_ids + self.output.ids) if layers.lookup else None)
        if at_prefill:
            yield from self.clock.emit(self.rechoose(loop, hs[:, -1] if hs is not None else None))
        while (reason := self.output.finished()) is None:
            with self.clock.counting() as syncs:           # the round's host synchronisations
                plan, last = self.plan(loop), self.output.ids[-1]
                drafted, draft_s = plan.copy, plan.copy_s
                if drafted is None:
                    t0 = self.clock.now()
                    drafted = draft(runner, last, loop.pos, plan.skip, plan.k_max, policy.det, self.sampler,
                                    self.eos)
                    draft_s = self.clock.now() - t0
                ride, loop.riding, ride_p = loop.riding, None, loop.pos - 1
                t0 = self.clock.now()
                verdict = verify(runner, last, loop.pos, drafted, self.sampler, plan.again and layers.uses_dp,
                                 ride, M)
                verify_s = self.clock.now() - t0
                event = self.keep(loop, plan, drafted, verdict, draft_s, verify_s)
            event.syncs = syncs.count
            yield from self.clock.emit(event)
            if verdict.dp is not None and self.output.finished() is None:
                yield from self.clock.emit(self.rechoose(loop, None, ride_p, verdict.dp))
            if plan.again and self.output.finished() is None:
                xs = verdict.states[:, verdict.accepted] if verdict.states is not None else None
                if layers.fused:                            # its DP rides the next round's verification
                    loop.riding, loop.since = xs, 0
                else:
                    yield from self.clock.emit(self.rechoose(loop, xs))
        yield self.record.done(reason, self.clock.wall(), self.prefill_s)

    def plan(self, loop: Loop) -> Plan:
        """This round's draft: the plan made with the last layer choice (else a fresh one), a copy where
        the context offers one, or a plain step (no draft), e.g. the one that feeds auto's first choice."""
        cfg, policy = self.cfg, loop.policy
        arm, k_max, speed = loop.planned or policy.plan()
        loop.planned, note = None, policy.note
        copy, copy_s = self.copy(loop, speed) if loop.index is not None else (None, 0.0)
        if copy is not None or not loop.layers.drafts:      # copied, or a plain step: no layer draft
            arm, k_max = None, len(copy.tokens) if copy is not None else 0
        feed = loop.choice is None and arm is not None      # auto wants to draft: a plain step feeds its first choice
        if feed:
            arm, k_max = None, 0
            note = {**note, "reason": "feed", "choice": "plain"} if note else note
        k_max = min(k_max, cfg.max_new_tokens - len(self.output.ids) - 1)
        skip = frozenset(loop.choice.skip_for(arm.M)) if arm is not None and k_max > 0 else frozenset()
        loop.since += 1
        again = feed or (arm is not None and loop.layers.due(loop.since, policy.loi(cfg.loi)))
        return Plan(arm, k_max, skip, note, copy, copy_s, again)

    def copy(self, loop: Loop, rival_speed: float) -> tuple[Draft | None, float]:
        """Tokens copied from the context where its last n-gram occurred before, and the seconds that took
        (None: no match, or auto finds no copy that pays)."""
        t0 = self.clock.now()
        left = self.cfg.max_new_tokens - len(self.output.ids) - 1
        match = loop.index.match(min(self.cfg.draft_len, left))
        k = loop.copier.length(match, loop.policy, rival_speed) if match is not None else 0
        if k < 1:
            return None, 0.0
        vocab = self.lm.model.get_output_embeddings().weight.shape[0]
        return copy_draft(match, k, self.eos, self.sampler, vocab, self.runner.device), self.clock.now() - t0

    def keep(self, loop: Loop, plan: Plan, drafted: Draft, verdict: Verdict, draft_s: float,
             verify_s: float) -> Round:
        """Keep the accepted drafts and the full model's next token (the cache forgets the rest), let the
        policies learn from the round, and tell it as a Round event."""
        acc, copy = verdict.accepted, plan.copy
        self.runner.rollback(loop.pos + acc + 1)
        emitted = self.output.extend(drafted.tokens[:acc] + [verdict.next])
        self.totals.add_round(drafted, verdict, draft_s, verify_s)
        if copy is None:
            loop.policy.observe(plan.arm, len(drafted.tokens), acc, drafted.steps, draft_s, verify_s)
        else:
            loop.copier.observe(copy.source, len(drafted.tokens), acc, verify_s, loop.policy)
        if loop.index is not None:
            loop.index.extend(emitted)
        event = self.record.round(loop, plan, drafted, verdict, emitted, draft_s, verify_s)
        loop.pos += acc + 1
        loop.rounds += 1
        return event

    def rechoose(self, loop: Loop, xs: torch.Tensor | None, p: int | None = None,
                 done: DPResult | None = None) -> LayerChoice:
        """Choose the layers again on the newest verified token's states ``xs`` (at position pos - 1), or take
        the DP ``done`` of the token at ``p`` that rode a verification (clasp-fused); then plan the next round
        at once, so its event can tell the set it drafts with."""
        p = loop.pos - 1 if p is None else p
        loop.choice = choice = (loop.layers.choose(self.runner, xs, p, self.cfg.num_skip) if done is None
                                else Choice(loop.layers.name, done.skip, done.seconds, done))
        if choice.dp is not None:
            self.totals.dp_s += choice.seconds
            self.totals.dp_calls += 1
            loop.policy.observe_dp(choice.seconds)
        loop.planned = loop.policy.plan()
        loop.since = loop.since if done is not None else 0     # a fused DP's count began when it was asked for
        loop.choices += 1
        return self.record.layer_choice(choice, loop.planned[0], loop.rounds, p, fused=done is not None)

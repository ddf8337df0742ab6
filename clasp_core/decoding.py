"""Vanilla and CLaSp decoding loops over one Runner; both yield trace events.

``generate`` validates everything first (clear ValueErrors), then returns the event iterator.
Greedy CLaSp is token-identical to greedy decoding; at temperature > 0 the speculative
sampling rule keeps the output distribution exactly the target's (see sampling.py).

One CLaSp loop serves every way of choosing layers (``GenConfig.strategy``, see strategies.py)
and both policies (fixed settings or auto, see auto.py): each round plans (M, K), drafts,
verifies with the full model, and chooses layers again when the strategy says so.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import torch

from .auto import AutoPolicy, FixedPolicy, Policy, head_share
from .clock import Clock
from .dp_static import verify_with_dp
from .layer_dp import DPResult
from .lookup import CopyPolicy, Match, NgramIndex
from .metrics import default_num_skip, dtype_name, tau
from .model import LoadedModel
from .output import Output
from .prompt import encode_prompt
from .sampling import greedy_accept, sample, speculative_accept, warp
from .settings import DEFAULT, SEED_MAX
from .strategies import DP_STRATEGIES, STRATEGIES, Choice, make_strategy
from .ties import top_two
from .trace import Done, Event, LayerChoice, Prefill, Round, Step

METHODS = ("clasp", "vanilla")


@dataclass
class GenConfig:
    """The settings of one run.

    ``auto`` picks M <= num_skip per round from the DP's table (every m backtracks from it), so
    it combines with the DP strategies only: ``clasp``, and ``clasp-once`` (the DP then runs once,
    when auto first drafts). The fixed sets (static, early-exit, random) have one set for one M:
    auto with them is a ValueError.
    """

    num_skip: int | None = DEFAULT["num_skip"]     # M: layers the draft skips (None: about 45% of L)
    draft_len: int = DEFAULT["draft_len"]          # K: most tokens drafted per round
    det: float = DEFAULT["det"]                    # draft-exiting threshold on the draft's top-1 probability
    loi: int = DEFAULT["loi"]                      # re-run the layer DP every LOI rounds
    temperature: float = DEFAULT["temperature"]
    top_p: float = DEFAULT["top_p"]
    seed: int = DEFAULT["seed"]
    max_new_tokens: int = DEFAULT["max_new_tokens"]
    auto: bool = DEFAULT["auto"]                   # adapt M and K (and fall back to plain steps) from what the run sees
    strategy: str = "clasp"         # how the skipped layers are chosen: one of STRATEGIES

    def resolved(self, num_layers: int) -> GenConfig:
        """A copy with M filled in; raises ValueError on anything out of range."""
        L = num_layers
        M = default_num_skip(L) if self.num_skip is None else self.num_skip
        checks = [
            (isinstance(M, int) and 0 <= M < L, f"M (layers to skip) must be between 0 and {L - 1} "
                                                f"for this {L}-layer model, got {M}"),
            (isinstance(self.draft_len, int) and self.draft_len >= 1,
             f"K (max draft length) must be at least 1, got {self.draft_len}"),
            (_num(self.det) and 0.0 <= self.det <= 1.0, f"DET must be in [0, 1], got {self.det}"),
            (isinstance(self.loi, int) and self.loi >= 1, f"LOI must be at least 1 round, got {self.loi}"),
            (_num(self.temperature) and self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (_num(self.top_p) and 0.0 < self.top_p <= 1.0, f"top-p must be in (0, 1], got {self.top_p}"),
            (isinstance(self.seed, int) and 0 <= self.seed <= SEED_MAX,     # past 64 bits torch's generator overflows
             f"seed must be a whole number from 0 to 2**63 - 1 ({SEED_MAX}), got {self.seed}"),
            (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
             f"max new tokens must be at least 1, got {self.max_new_tokens}"),
            (self.strategy in STRATEGIES,
             f"unknown layer-choice strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}"),
            (not self.auto or self.strategy not in STRATEGIES or self.strategy in DP_STRATEGIES,
             f"auto chooses M each round from the layer DP's table, so it works with the strategies "
             f"{' and '.join(DP_STRATEGIES)} only, not {self.strategy!r}: turn auto off or pick one of those"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        return replace(self, num_skip=M)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


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
    run = _Run(lm, runner, cfg, ids, text, method, stop, capture_s)
    return run.vanilla() if method == "vanilla" else run.clasp()


# ---- what one round's parts return ---------------------------------------------------------
@dataclass
class Draft:
    tokens: list[int]
    q_rows: list[torch.Tensor]      # the draft's distribution at each drafted token
    q_x: list[float]                # q(x) of each drafted token
    steps: int                      # draft forwards run (one more than tokens when DET stopped it)
    seconds: float
    source: Match | None = None     # set when the tokens were copied from the context (lookup.py)


@dataclass
class Verdict:
    accepted: int                   # drafted tokens accepted (a prefix)
    next: int                       # the full model's own token after them
    kind: str                       # "corrected" | "bonus"
    p_x: list[float]                # p(x) of each drafted token under the full model
    seconds: float
    states: torch.Tensor | None     # per-layer states of the verified block, when layers are chosen next
    top_ids: list = field(default_factory=list)     # greedy: the full model's top two at each emitted position
    top_logits: list = field(default_factory=list)
    dp: DPResult | None = None      # clasp-fused: the layer DP that rode this verification


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

    def add_round(self, draft: Draft, verdict: Verdict) -> None:
        self.rounds += 1
        self.drafted += len(draft.tokens)
        self.accepted += verdict.accepted
        self.draft_s += draft.seconds
        self.verify_s += verdict.seconds


# ---- the loops ---------------------------------------------------------------------------
@dataclass
class Plan:
    """What one round does: draft up to ``k_max`` tokens without the layers in ``skip`` (``arm``: auto's
    pick of M; None for a copy or a plain step), or take ``copy``; ``again``: choose layers after it."""

    arm: object | None
    k_max: int
    skip: frozenset
    note: dict | None               # auto's reasons, told in the Round event
    copy: Draft | None
    again: bool


@dataclass
class Loop:
    """Where a CLaSp run stands between rounds."""

    layers: object                  # the layer-choice strategy (strategies.py)
    policy: object                  # FixedPolicy | AutoPolicy (auto.py)
    copier: CopyPolicy
    index: NgramIndex | None        # the context's n-grams, for strategies that copy
    pos: int                        # position of the newest token (not yet in the cache)
    choice: Choice | None = None    # the layers chosen last
    planned: tuple | None = None    # the next round's plan, made with the layer choice
    choices: int = 0                # layer choices so far
    rounds: int = 0
    since: int = 0                  # rounds since the last layer choice
    riding: tuple | None = None     # clasp-fused: (states, position) of the token whose DP rides the next verification


class _Run:
    """One generation: its output (output.py), its clock (clock.py), its counters, and the steps of a round."""

    def __init__(self, lm, runner, cfg, ids, text, method, stop, capture_s: float = 0.0):
        self.lm, self.runner, self.cfg, self.method = lm, runner, cfg, method
        self.prompt_ids, self.prompt_text = ids, text
        self.device = runner.device
        self.eos = set(lm.eos_ids)
        self.greedy = cfg.temperature == 0
        self.gen = None if self.greedy else torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.output = Output(lm.tokenizer, self.eos, cfg.max_new_tokens, stop)
        self.clock = Clock(self.device)
        self.capture_s = capture_s          # CUDA graphs captured before the run: reported apart
        self.totals = Totals()

    def ids(self, xs) -> torch.Tensor:
        return torch.tensor(xs, dtype=torch.long, device=self.device)

    def pick(self, logits: torch.Tensor) -> int:
        if self.greedy:
            return int(logits[-1].argmax())
        return sample(warp(logits[-1], self.cfg.temperature, self.cfg.top_p), self.gen)

    def tops(self, logits: torch.Tensor) -> dict:
        """Greedy runs record the full model's two best candidates at each row (ties.py reads them)."""
        if not self.greedy:
            return dict(top_ids=[], top_logits=[])
        ids, vals = top_two(logits)
        return dict(top_ids=ids, top_logits=vals)

    def top_of_last(self, logits: torch.Tensor) -> dict:
        """``tops`` of the last row alone, for an event of one token (Prefill, Step)."""
        return {k: v[0] if v else v for k, v in self.tops(logits[-1:]).items()}

    def prefill(self, hidden: bool, params: dict):
        t0 = self.clock.now()
        res = self.runner.forward(self.ids(self.prompt_ids), 0, hidden=hidden, last_only=True)
        logits, hs = res if hidden else (res, None)
        first = self.pick(logits)
        self.output.ids.append(first)
        self.prefill_s = self.clock.now() - t0
        self.clock.start = t0
        params = {**(asdict(self.cfg) if self.method == "clasp" else dict(
            temperature=self.cfg.temperature, top_p=self.cfg.top_p, seed=self.cfg.seed,
            max_new_tokens=self.cfg.max_new_tokens)), **params}
        params["graph_capture_s"] = self.capture_s          # reported apart, never inside wall time
        ev = Prefill(method=self.method, model=self.lm.name, num_layers=self.runner.num_layers,
                     prompt_ids=list(self.prompt_ids), prompt_text=self.prompt_text, params=params,
                     seconds=self.prefill_s, first_token=first, first_text=self.output.commit([first])[0],
                     device=str(self.device), dtype=dtype_name(self.runner.dtype),
                     **self.top_of_last(logits))
        return ev, hs

    def done(self, reason: str) -> Done:
        wall = self.clock.wall()
        n = len(self.output.ids)
        text = self.output.text()
        return Done(method=self.method, new_tokens=n, output_ids=list(self.output.ids), text=text, wall_s=wall,
                    decode_s=wall - self.prefill_s, prefill_s=self.prefill_s,
                    tokens_per_s=n / wall if wall > 0 else 0.0, stop_reason=reason,
                    tau=tau(n, self.totals.rounds), tail_text=self.output.tail(), **asdict(self.totals))

    # vanilla: one full forward per token
    def vanilla(self) -> Iterator[Event]:
        ev, _ = self.prefill(hidden=False, params={})
        yield from self.clock.emit(ev)
        out = self.output
        pos = len(self.prompt_ids)
        while (reason := out.finished()) is None:
            t0 = self.clock.now()
            logits = self.runner.forward(self.ids(out.ids[-1:]), pos, last_only=True)
            tok = self.pick(logits)
            out.ids.append(tok)
            pos += 1
            seconds = self.clock.now() - t0
            yield from self.clock.emit(Step(index=len(out.ids) - 1, token=tok, text=out.commit([tok])[0],
                                            seconds=seconds, **self.top_of_last(logits)))
        yield self.done(reason)

    # CLaSp: each round plans, drafts, verifies with the full model, keeps what it accepts, and
    # chooses the skipped layers again when the strategy says so
    def clasp(self) -> Iterator[Event]:
        cfg, M = self.cfg, self.cfg.num_skip
        layers = make_strategy(cfg.strategy, cfg.seed)
        params = layers.prepare(self.lm, M)                 # e.g. the static search: before any clock
        policy: Policy = (AutoPolicy(self.runner.num_layers, M, cfg.draft_len, head_share(self.lm.model))
                          if cfg.auto else FixedPolicy(M, cfg.draft_len, cfg.det))
        at_prefill = policy.choose_at_prefill and layers.drafts
        ev, hs = self.prefill(hidden=at_prefill and layers.uses_dp, params=params)
        policy.observe_prefill(self.prefill_s, len(self.prompt_ids))
        yield from self.clock.emit(ev)
        loop = Loop(layers, policy, CopyPolicy(cfg.auto), pos=len(self.prompt_ids),
                    index=NgramIndex(self.prompt_ids + self.output.ids) if layers.lookup else None)
        if at_prefill:
            yield from self.clock.emit(self.rechoose(loop, hs[:, -1] if hs is not None else None))
        while (reason := self.output.finished()) is None:
            with self.clock.counting() as syncs:           # the round's host synchronisations
                plan = self.plan(loop)
                draft = plan.copy if plan.copy is not None else self.draft(loop.pos, plan.skip, plan.k_max,
                                                                           policy.det)
                ride, loop.riding = loop.riding, None
                verdict = self.verify(loop.pos, draft, states=plan.again and layers.uses_dp, ride=ride)
                event = self.keep(loop, plan, draft, verdict)
            event.syncs = syncs.count
            yield from self.clock.emit(event)
            if verdict.dp is not None and self.output.finished() is None:
                yield from self.clock.emit(self.rechoose(loop, None, ride[1], verdict.dp))
            if plan.again and self.output.finished() is None:
                xs = verdict.states[:, verdict.accepted] if verdict.states is not None else None
                if getattr(layers, "fused", False):      # its DP rides the next round's verification
                    loop.riding, loop.since = (xs, loop.pos - 1), 0
                else:
                    yield from self.clock.emit(self.rechoose(loop, xs))
        yield self.done(reason)

    def plan(self, loop: Loop) -> Plan:
        """This round's draft: the plan made with the last layer choice (else a fresh one), a copy where
        the context offers one, or a plain step (no draft), e.g. the one that feeds auto's first choice."""
        cfg, policy = self.cfg, loop.policy
        arm, k_max, speed = loop.planned or policy.plan()
        loop.planned, note = None, policy.note
        copy = self.copy_draft(loop.index, loop.copier, policy, speed) if loop.index is not None else None
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
        return Plan(arm, k_max, skip, note, copy, again)

    def keep(self, loop: Loop, plan: Plan, draft: Draft, verdict: Verdict) -> Round:
        """Keep the accepted drafts and the full model's next token (the cache forgets the rest), let the
        policies learn from the round, and tell it as a Round event."""
        acc, copy = verdict.accepted, plan.copy
        self.runner.rollback(loop.pos + acc + 1)
        emitted = self.output.extend(draft.tokens[:acc] + [verdict.next])
        self.totals.add_round(draft, verdict)
        if copy is None:
            loop.policy.observe(plan.arm, len(draft.tokens), acc, draft.steps, draft.seconds, verdict.seconds)
        else:
            loop.copier.observe(copy.source, len(draft.tokens), acc, verdict.seconds, loop.policy)
        if loop.index is not None:
            loop.index.extend(emitted)
        drafted_text, next_text = self.output.round_texts(draft.tokens, acc, verdict.next, len(emitted))
        event = Round(
            index=loop.rounds, skip=sorted(plan.skip) if draft.steps else [], drafted=draft.tokens,
            drafted_text=drafted_text, draft_probs=draft.q_x, target_probs=verdict.p_x, accepted=acc,
            next_token=verdict.next, next_text=next_text, next_kind=verdict.kind, emitted=emitted,
            draft_s=draft.seconds, verify_s=verdict.seconds, start=len(self.output.ids) - len(emitted),
            k_max=plan.k_max, choice=loop.choices - 1, auto=plan.note, top_ids=verdict.top_ids[:len(emitted)],
            top_logits=verdict.top_logits[:len(emitted)],
            lookup=self.copy_record(copy.source, loop.index) if copy is not None else None)
        loop.pos += acc + 1
        loop.rounds += 1
        return event

    def rechoose(self, loop: Loop, xs: torch.Tensor | None, p: int | None = None,
                 done: DPResult | None = None) -> LayerChoice:
        """Choose the layers again on the newest verified token's states ``xs`` (at position pos - 1), or take
        the DP ``done`` of the token at ``p`` that rode a verification (clasp-fused)."""
        p = loop.pos - 1 if p is None else p
        loop.choice, loop.planned = self.choose(loop.layers, loop.policy, xs, p, done)
        loop.since = loop.since if done is not None else 0    # a fused DP's count began when it was asked for
        loop.choices += 1
        return self.layer_event(loop.choice, loop.planned, loop.rounds, p, fused=done is not None)

    def choose(self, layers, policy, xs: torch.Tensor | None, p: int, done: DPResult | None = None):
        """Choose layers, then plan the next round at once, so its event can tell the set it drafts with."""
        choice = (layers.choose(self.runner, xs, p, self.cfg.num_skip) if done is None
                  else Choice(layers.name, done.skip, done.seconds, done))
        if choice.dp is not None:
            self.totals.dp_s += choice.seconds
            self.totals.dp_calls += 1
            policy.observe_dp(choice.seconds)
        return choice, policy.plan()

    def layer_event(self, choice: Choice, planned, round_index: int, p: int, fused: bool = False) -> LayerChoice:
        """The set the next round drafts with: skip_for(arm.M), or the full-M set if it is a plain step."""
        arm = planned[0]
        m = arm.M if arm is not None else self.cfg.num_skip
        skip, path = choice.for_m(m)
        dp = choice.dp
        return LayerChoice(round=round_index, position=p, skip=skip, D=dp.D if dp else [], path=path,
                           seconds=choice.seconds, num_skip=m, strategy=choice.strategy,
                           flags=dp.flags if dp else None, fused=fused)

    def draft(self, pos: int, skip: frozenset, k_max: int, det: float) -> Draft:
        """Up to k_max tokens from the layer-skipping draft; stops when its top-1 prob < DET."""
        cfg = self.cfg
        t0 = self.clock.now()
        tokens, q_rows, q_x = [], [], []
        cur = self.output.ids[-1]
        steps = 0
        for k in range(max(0, k_max)):
            steps += 1
            logits = self.runner.forward(self.ids([cur]), pos + k, skip, last_only=True)[-1]
            if self.greedy:
                q = torch.softmax(logits.float(), -1)
                conf, tok = (float(v) for v in q.max(-1))
                tok = int(tok)
            else:
                q = warp(logits, cfg.temperature, cfg.top_p)
                tok = sample(q, self.gen)
                conf = float(q.max())
            if conf < det:
                break
            tokens.append(tok)
            q_rows.append(q)
            q_x.append(float(q[tok]))
            if tok in self.eos:
                break
            cur = tok
        return Draft(tokens, q_rows, q_x, steps, self.clock.now() - t0)

    def copy_draft(self, index: NgramIndex, copier: CopyPolicy, policy, rival_speed: float) -> Draft | None:
        """Tokens copied from the context where its last n-gram occurred before (None: no match, or
        auto finds no copy that pays). Cut after an EOS. A copy is certain, so when sampling its q is
        one-hot: accepted with probability p(x), replaced from norm(max(0, p - q)), still exact."""
        t0 = self.clock.now()
        left = self.cfg.max_new_tokens - len(self.output.ids) - 1
        match = index.match(min(self.cfg.draft_len, left))
        k = copier.length(match, policy, rival_speed) if match is not None else 0
        if k < 1:
            return None
        tokens = match.tokens[:k]
        eos = next((i for i, t in enumerate(tokens) if t in self.eos), None)
        if eos is not None:
            tokens = tokens[:eos + 1]
        match = replace(match, tokens=tokens)
        q_rows = [] if self.greedy else list(torch.nn.functional.one_hot(
            self.ids(tokens), self.lm.model.get_output_embeddings().weight.shape[0]).float())
        return Draft(tokens, q_rows, [1.0] * len(tokens), 0, self.clock.now() - t0, match)

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

    def verify(self, pos: int, draft: Draft, states: bool, ride: tuple | None = None) -> Verdict:
        """The full model over the newest token and the draft: how many drafts it accepts, and its own next.
        ``ride``: (states, position) of a token whose layer DP runs in the same layer calls (clasp-fused)."""
        t0 = self.clock.now()
        drafted, k = draft.tokens, len(draft.tokens)
        rows = self.greedy and k > 0 and self.runner.rows_head
        ids, dp = self.ids(self.output.ids[-1:] + drafted), None
        if ride is not None:
            logits, hs, dp = verify_with_dp(self.runner, ids, pos, ride[0], self.cfg.num_skip, hidden=states,
                                            head=not rows)
        else:
            res = self.runner.forward(ids, pos, hidden=states, head=not rows)
            logits, hs = res if states else (res, None)
        if rows:
            logits = self.head_rows(logits, drafted)
        if self.greedy:
            acc, nxt, kind = greedy_accept(drafted, logits.argmax(-1).tolist())
            seen = min(k, len(logits))                   # rows past the first rejection were never computed
            p_x = (torch.softmax(logits[:seen].float(), -1)[torch.arange(seen), self.ids(drafted[:seen])].tolist()
                   if k else [])
        else:
            p = warp(logits, self.cfg.temperature, self.cfg.top_p)
            q = torch.stack(draft.q_rows) if k else p[:0]
            acc, nxt, kind = speculative_accept(drafted, q, p, self.gen)
            p_x = p[torch.arange(k), self.ids(drafted)].tolist() if k else []
        top = self.tops(logits[:acc + 1])
        return Verdict(acc, nxt, kind, p_x, self.clock.now() - t0, hs, **top, dp=dp)

    def head_rows(self, y: torch.Tensor, drafted: list[int]) -> torch.Tensor:
        """Greedy verification's logits up to the first draft the full model rejects (runner.rows_head), in
        blocks of ``runner.head_block`` rows: the rows after it decide nothing, and on a CPU a block of one or
        two rows costs about one row's product (the weights are read once), where the whole block's costs more.
        Each row comes out bitwise as a plain step's (the engine's kernel sums each row alone), so the argmax
        is the same."""
        out, b = [], self.runner.head_block
        for i in range(0, len(drafted) + 1, b):
            out.append(self.runner.head_row(y[i:i + b]))
            for r, best in enumerate(out[-1].argmax(-1).tolist(), i):
                if r == len(drafted) or best != drafted[r]:
                    return torch.cat(out)
        return torch.cat(out)


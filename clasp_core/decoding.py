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
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Iterator

import torch

from .auto import AutoPolicy, FixedPolicy, head_share
from .detok import Detokenizer
from .lookup import CopyPolicy, Match, NgramIndex
from .metrics import default_num_skip, dtype_name, tau
from .model import LoadedModel
from .runner import Runner
from .sampling import greedy_accept, sample, speculative_accept, warp
from .strategies import DP_STRATEGIES, STRATEGIES, Choice, make_strategy
from .ties import top_two
from .trace import Done, Event, LayerChoice, Prefill, Round, Step

METHODS = ("clasp", "vanilla")
SEED_MAX = 2**63 - 1                # a seed must fit a signed 64-bit integer


@dataclass
class GenConfig:
    """The settings of one run.

    ``auto`` picks M <= num_skip per round from the DP's table (every m backtracks from it), so
    it combines with the DP strategies only: ``clasp``, and ``clasp-once`` (the DP then runs once,
    when auto first drafts). The fixed sets (static, early-exit, random) have one set for one M:
    auto with them is a ValueError.
    """

    num_skip: int | None = None     # M: layers the draft skips (None: about 45% of L)
    draft_len: int = 8              # K: most tokens drafted per round
    det: float = 0.7                # draft-exiting threshold on the draft's top-1 probability
    loi: int = 1                    # re-run the layer DP every LOI rounds
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int = 128
    auto: bool = False              # adapt M and K (and fall back to plain steps) from what the run sees
    strategy: str = "clasp"         # how the skipped layers are chosen: one of STRATEGIES

    def resolved(self, num_layers: int) -> "GenConfig":
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


# ---- prompt ------------------------------------------------------------------------------
def encode_prompt(lm: LoadedModel, prompt: str, chat: bool = True) -> tuple[list[int], str]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty: type something to continue")
    tok = lm.tokenizer
    if tok is None:
        raise ValueError("this model has no tokenizer; pass prompt_ids instead")
    if chat and getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        text = prompt
        ids = tok(text)["input_ids"]
    return list(ids), text


def get_runner(lm: LoadedModel) -> Runner:
    runner = getattr(lm, "_runner", None)
    if runner is None:
        runner = Runner(lm.model)
        lm._runner = runner
    return runner


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
    runner = get_runner(lm)
    runner.allocate(need + cfg.draft_len + cfg.num_skip + 2)
    capture_s = runner.prepare(cfg.draft_len + 1)       # CUDA graphs, captured before any clock starts
    run = _Run(lm, runner, cfg, ids, text, method, stop)
    run.capture_s = capture_s
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
class _Run:
    """State of one generation: output so far, clocks, counters."""

    def __init__(self, lm, runner, cfg, ids, text, method, stop):
        self.lm, self.runner, self.cfg, self.method, self.stop = lm, runner, cfg, method, stop
        self.prompt_ids, self.prompt_text = ids, text
        self.device = runner.device
        self.eos = set(lm.eos_ids)
        self.greedy = cfg.temperature == 0
        self.gen = None if self.greedy else torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.out: list[int] = []
        self.detok = Detokenizer(lm.tokenizer)
        self.paused = 0.0                   # time spent outside the engine, at a yield
        self.capture_s = 0.0
        self.totals = Totals()

    # clocks and text
    def emit(self, event: Event) -> Iterator[Event]:
        """Yield one event; the consumer's time before it asks for the next is not the engine's."""
        t0 = time.perf_counter()
        yield event
        self.paused += time.perf_counter() - t0

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

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

    def finished(self) -> str | None:
        if self.out and self.out[-1] in self.eos:
            return "eos"
        if len(self.out) >= self.cfg.max_new_tokens:
            return "max_new_tokens"
        if self.stop is not None and self.stop.is_set():
            return "stopped"
        return None

    def commit(self, tokens: list[int]) -> list[str]:
        """Text pieces of tokens just added to the output (see detok.py); the last ones release all."""
        return self.detok.push(tokens, final=self.finished() is not None)

    def prefill(self, hidden: bool, params: dict):
        t0 = self.now()
        res = self.runner.forward(self.ids(self.prompt_ids), 0, hidden=hidden, last_only=True)
        logits, hs = res if hidden else (res, None)
        first = self.pick(logits)
        self.out.append(first)
        self.prefill_s = self.now() - t0
        self.t_start = t0
        params = {**(asdict(self.cfg) if self.method == "clasp" else dict(
            temperature=self.cfg.temperature, top_p=self.cfg.top_p, seed=self.cfg.seed,
            max_new_tokens=self.cfg.max_new_tokens)), **params}
        params["graph_capture_s"] = self.capture_s          # reported apart, never inside wall time
        ev = Prefill(method=self.method, model=self.lm.name, num_layers=self.runner.num_layers,
                     prompt_ids=list(self.prompt_ids), prompt_text=self.prompt_text, params=params,
                     seconds=self.prefill_s, first_token=first, first_text=self.commit([first])[0],
                     device=str(self.device), dtype=dtype_name(self.runner.dtype),
                     **self.top_of_last(logits))
        return ev, hs

    def done(self, reason: str) -> Done:
        wall = self.now() - self.t_start - self.paused
        n = len(self.out)
        tok = self.lm.tokenizer
        text = tok.decode(self.out, skip_special_tokens=True) if tok is not None else " ".join(map(str, self.out))
        return Done(method=self.method, new_tokens=n, output_ids=list(self.out), text=text, wall_s=wall,
                    decode_s=wall - self.prefill_s, prefill_s=self.prefill_s,
                    tokens_per_s=n / wall if wall > 0 else 0.0, stop_reason=reason,
                    tau=tau(n, self.totals.rounds), tail_text=self.detok.flush(), **asdict(self.totals))

    # vanilla: one full forward per token
    def vanilla(self) -> Iterator[Event]:
        ev, _ = self.prefill(hidden=False, params={})
        yield from self.emit(ev)
        pos = len(self.prompt_ids)
        while (reason := self.finished()) is None:
            t0 = self.now()
            logits = self.runner.forward(self.ids(self.out[-1:]), pos, last_only=True)
            tok = self.pick(logits)
            self.out.append(tok)
            pos += 1
            seconds = self.now() - t0
            yield from self.emit(Step(index=len(self.out) - 1, token=tok, text=self.commit([tok])[0],
                                      seconds=seconds, **self.top_of_last(logits)))
        yield self.done(reason)

    # CLaSp: draft with the skip set, verify with the full model, re-choose the skip set
    def clasp(self) -> Iterator[Event]:
        cfg, M = self.cfg, self.cfg.num_skip
        layers = make_strategy(cfg.strategy, cfg.seed)
        params = layers.prepare(self.lm, M)                 # e.g. the static search: before any clock
        policy = (AutoPolicy(self.runner.num_layers, M, cfg.draft_len, head_share(self.lm.model),
                             prefill=None) if cfg.auto else FixedPolicy(M, cfg.draft_len, cfg.det))
        at_prefill = policy.choose_at_prefill and layers.drafts
        ev, hs = self.prefill(hidden=at_prefill and layers.uses_dp, params=params)
        if cfg.auto:
            policy.prefill = (self.prefill_s, len(self.prompt_ids))
        yield from self.emit(ev)
        pos = len(self.prompt_ids)          # position of the newest token (not yet in the cache)
        choice, planned, n_choices = None, None, 0
        index = NgramIndex(self.prompt_ids + self.out) if layers.lookup else None
        copier = CopyPolicy(cfg.auto)
        if at_prefill:
            choice, planned = self.choose(layers, policy, hs[:, -1] if hs is not None else None, pos - 1)
            yield from self.emit(self.layer_event(choice, planned, 0, pos - 1))
            n_choices = 1
        r = since = 0
        while (reason := self.finished()) is None:
            arm, k_max, speed = planned or policy.plan()
            planned, note = None, policy.note
            copy = self.copy_draft(index, copier, policy, speed) if index is not None else None
            if copy is not None or not layers.drafts:           # copied, or a plain step: no layer draft
                arm, k_max = None, len(copy.tokens) if copy is not None else 0
            feed = choice is None and arm is not None   # auto wants to draft: this plain step feeds the first choice
            if feed:
                arm, k_max = None, 0
                note = {**note, "reason": "feed", "choice": "plain"} if note else note
            k_max = min(k_max, cfg.max_new_tokens - len(self.out) - 1)
            skip = frozenset(choice.skip_for(arm.M)) if arm is not None and k_max > 0 else frozenset()
            draft = copy if copy is not None else self.draft(pos, skip, k_max, policy.det)
            since += 1
            again = feed or (arm is not None and layers.due(since, policy.loi(cfg.loi)))
            verdict = self.verify(pos, draft, states=again and layers.uses_dp)
            acc = verdict.accepted
            self.runner.rollback(pos + acc + 1)                  # keep the accepted, forget the rest
            emitted = self.append(draft.tokens[:acc] + [verdict.next])
            self.totals.add_round(draft, verdict)
            if copy is None:
                policy.observe(arm, len(draft.tokens), acc, draft.steps, draft.seconds, verdict.seconds)
            else:
                copier.observe(copy.source, len(draft.tokens), acc, verdict.seconds, policy)
            if index is not None:
                index.extend(emitted)
            drafted_text, next_text = self.round_texts(draft.tokens, acc, verdict.next, len(emitted))
            yield from self.emit(Round(
                index=r, skip=sorted(skip) if draft.steps else [], drafted=draft.tokens, drafted_text=drafted_text,
                draft_probs=draft.q_x, target_probs=verdict.p_x, accepted=acc, next_token=verdict.next,
                next_text=next_text, next_kind=verdict.kind, emitted=emitted, draft_s=draft.seconds,
                verify_s=verdict.seconds, start=len(self.out) - len(emitted), k_max=k_max, choice=n_choices - 1,
                auto=note, top_ids=verdict.top_ids[:len(emitted)], top_logits=verdict.top_logits[:len(emitted)],
                lookup=self.copy_record(copy.source, index) if copy is not None else None))
            pos += acc + 1
            r += 1
            if again and self.finished() is None:
                xs = verdict.states[:, acc] if verdict.states is not None else None
                choice, planned = self.choose(layers, policy, xs, pos - 1)
                since = 0
                yield from self.emit(self.layer_event(choice, planned, r, pos - 1))
                n_choices += 1
        yield self.done(reason)

    def choose(self, layers, policy, xs: torch.Tensor | None, p: int):
        """Choose layers, then plan the next round at once, so its event can tell the set it drafts with."""
        choice = layers.choose(self.runner, xs, p, self.cfg.num_skip)
        if choice.dp is not None:
            self.totals.dp_s += choice.seconds
            self.totals.dp_calls += 1
            policy.observe_dp(choice.seconds)
        return choice, policy.plan()

    def layer_event(self, choice: Choice, planned, round_index: int, p: int) -> LayerChoice:
        """The set the next round drafts with: skip_for(arm.M), or the full-M set if it is a plain step."""
        arm = planned[0]
        m = arm.M if arm is not None else self.cfg.num_skip
        skip, path = choice.for_m(m)
        dp = choice.dp
        return LayerChoice(round=round_index, position=p, skip=skip, D=dp.D if dp else [], path=path,
                           seconds=choice.seconds, num_skip=m, strategy=choice.strategy,
                           flags=dp.flags if dp else None)

    def draft(self, pos: int, skip: frozenset, k_max: int, det: float) -> Draft:
        """Up to k_max tokens from the layer-skipping draft; stops when its top-1 prob < DET."""
        cfg = self.cfg
        t0 = self.now()
        tokens, q_rows, q_x = [], [], []
        cur = self.out[-1]
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
        return Draft(tokens, q_rows, q_x, steps, self.now() - t0)

    def copy_draft(self, index: NgramIndex, copier: CopyPolicy, policy, rival_speed: float) -> Draft | None:
        """Tokens copied from the context where its last n-gram occurred before (None: no match, or
        auto finds no copy that pays). Cut after an EOS. A copy is certain, so when sampling its q is
        one-hot: accepted with probability p(x), replaced from norm(max(0, p - q)), still exact."""
        t0 = self.now()
        left = self.cfg.max_new_tokens - len(self.out) - 1
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
        return Draft(tokens, q_rows, [1.0] * len(tokens), 0, self.now() - t0, match)

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

    def verify(self, pos: int, draft: Draft, states: bool) -> Verdict:
        """The full model over the newest token and the draft: how many drafts it accepts, and its own next."""
        t0 = self.now()
        drafted, k = draft.tokens, len(draft.tokens)
        rows = self.greedy and k > 0 and self.runner.rows_head
        res = self.runner.forward(self.ids(self.out[-1:] + drafted), pos, hidden=states, head=not rows)
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
        return Verdict(acc, nxt, kind, p_x, self.now() - t0, hs, **top)

    def head_rows(self, y: torch.Tensor, drafted: list[int]) -> torch.Tensor:
        """Greedy verification's logits, one row at a time up to the first draft the full model rejects
        (runner.rows_head): the rows after it decide nothing, and on a CPU one-row products are cheaper
        than the block's. Each row is the same product a plain step runs, so the argmax is the same."""
        out = []
        for i in range(len(drafted) + 1):
            out.append(self.runner.head_row(y[i:i + 1]))
            if i == len(drafted) or int(out[-1][0].argmax()) != drafted[i]:
                break
        return torch.cat(out)

    def append(self, tokens: list[int]) -> list[int]:
        """Add a round's tokens to the output, cut after EOS and at max_new_tokens."""
        emitted = []
        for t in tokens:
            if len(self.out) >= self.cfg.max_new_tokens:
                break
            self.out.append(t)
            emitted.append(t)
            if t in self.eos:
                break
        return emitted

    def round_texts(self, drafted: list[int], acc: int, nxt: int, n_emitted: int) -> tuple[list[str], str]:
        """Pieces of the drafted tokens and of the next token: committed where emitted, else peeked
        after the accepted prefix (a rejected draft's text is never part of the output)."""
        kept = min(acc, n_emitted)
        last = n_emitted == kept                         # no next token: the accepted drafts end the output
        done = self.finished() is not None
        texts = self.detok.push(drafted[:kept], final=done and last)
        texts += self.detok.peek(drafted[kept:])
        if not last:
            return texts, self.detok.push([nxt], final=done)[0]
        return texts, self.detok.peek(drafted[kept:acc] + [nxt])[-1]

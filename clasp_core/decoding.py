"""Vanilla and CLaSp decoding loops over one Runner; both yield trace events.

``generate`` validates everything first (clear ValueErrors), then returns the event iterator.
Greedy CLaSp is token-identical to greedy decoding; at temperature > 0 the speculative
sampling rule keeps the output distribution exactly the target's (see sampling.py).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Iterator

import torch

from .auto import AutoPolicy, head_share
from .layer_dp import choose_skip_set
from .model import LoadedModel
from .runner import Runner
from .sampling import greedy_accept, sample, speculative_accept, warp
from .trace import Done, Event, LayerChoice, Prefill, Round, Step

METHODS = ("clasp", "vanilla")


@dataclass
class GenConfig:
    num_skip: int | None = None     # M: layers the draft skips (None: about 45% of L)
    draft_len: int = 8              # K: most tokens drafted per round
    det: float = 0.7                # draft-exiting threshold on the draft's top-1 probability
    loi: int = 1                    # re-run the layer DP every LOI rounds
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int = 128
    auto: bool = False              # adapt M and K (and fall back to plain steps) from what the run sees

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
            (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
             f"max new tokens must be at least 1, got {self.max_new_tokens}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        return replace(self, num_skip=M)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def default_num_skip(num_layers: int) -> int:
    """About 45% of the layers (the paper finds 40-60% of L best)."""
    return max(0, min(num_layers - 1, round(0.45 * num_layers)))


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
    """Validate, then return the event iterator of one run (``method``: clasp | vanilla)."""
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
        self.paused = 0.0                   # time spent outside the engine, at a yield
        self.capture_s = 0.0
        self.totals = dict(rounds=0, drafted=0, accepted=0, draft_s=0.0, verify_s=0.0, dp_s=0.0, dp_calls=0)

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

    def piece(self, t: int) -> str:
        tok = self.lm.tokenizer
        return tok.decode([t]) if tok is not None else f"<{t}>"

    def ids(self, xs) -> torch.Tensor:
        return torch.tensor(xs, dtype=torch.long, device=self.device)

    def pick(self, logits: torch.Tensor) -> int:
        if self.greedy:
            return int(logits[-1].argmax())
        return sample(warp(logits[-1], self.cfg.temperature, self.cfg.top_p), self.gen)

    def finished(self) -> str | None:
        if self.out and self.out[-1] in self.eos:
            return "eos"
        if len(self.out) >= self.cfg.max_new_tokens:
            return "max_new_tokens"
        if self.stop is not None and self.stop.is_set():
            return "stopped"
        return None

    def prefill(self, hidden: bool):
        t0 = self.now()
        res = self.runner.forward(self.ids(self.prompt_ids), 0, hidden=hidden, last_only=True)
        logits, hs = res if hidden else (res, None)
        first = self.pick(logits)
        self.out.append(first)
        self.prefill_s = self.now() - t0
        self.t_start = t0
        params = asdict(self.cfg) if self.method == "clasp" else dict(
            temperature=self.cfg.temperature, top_p=self.cfg.top_p, seed=self.cfg.seed,
            max_new_tokens=self.cfg.max_new_tokens)
        params["graph_capture_s"] = self.capture_s          # reported apart, never inside wall time
        ev = Prefill(method=self.method, model=self.lm.name, num_layers=self.runner.num_layers,
                     prompt_ids=list(self.prompt_ids), prompt_text=self.prompt_text, params=params,
                     seconds=self.prefill_s, first_token=first, first_text=self.piece(first),
                     device=str(self.device), dtype=str(self.runner.dtype).replace("torch.", ""))
        return ev, hs

    def done(self, reason: str) -> Done:
        wall = self.now() - self.t_start - self.paused
        t = self.totals
        n = len(self.out)
        tok = self.lm.tokenizer
        text = tok.decode(self.out, skip_special_tokens=True) if tok is not None else " ".join(map(str, self.out))
        return Done(method=self.method, new_tokens=n, output_ids=list(self.out), text=text, wall_s=wall,
                    decode_s=wall - self.prefill_s, prefill_s=self.prefill_s,
                    tokens_per_s=n / wall if wall > 0 else 0.0, stop_reason=reason,
                    tau=(n - 1) / t["rounds"] if t["rounds"] else 0.0, **t)

    # vanilla: one full forward per token
    def vanilla(self) -> Iterator[Event]:
        ev, _ = self.prefill(hidden=False)
        yield from self.emit(ev)
        pos = len(self.prompt_ids)
        while (reason := self.finished()) is None:
            t0 = self.now()
            tok = self.pick(self.runner.forward(self.ids(self.out[-1:]), pos, last_only=True))
            self.out.append(tok)
            pos += 1
            yield from self.emit(Step(index=len(self.out) - 1, token=tok, text=self.piece(tok),
                                      seconds=self.now() - t0))
        yield self.done(reason)

    # CLaSp: draft with the skip set, verify with the full model, re-choose the skip set
    def clasp(self) -> Iterator[Event]:
        cfg = self.cfg
        ev, hs = self.prefill(hidden=True)
        yield from self.emit(ev)
        pos = len(self.prompt_ids)          # position of the newest token (not yet in the cache)
        policy = AutoPolicy(self.runner.num_layers, cfg.num_skip, cfg.draft_len,
                            head_share(self.lm.model), prefill=(self.prefill_s, len(self.prompt_ids))) \
            if cfg.auto else None
        dp = None                           # auto runs the first DP only once it wants to draft
        if policy is None:
            dp, choice = self.choose_layers(hs[:, -1], pos - 1, 0, policy)
            yield from self.emit(choice)
        r = since_dp = 0
        while (reason := self.finished()) is None:
            arm, k_max, skip, det = self.plan(policy, dp)
            first_dp = dp is None and arm is not None   # auto wants to draft: this plain step feeds the DP
            if first_dp:
                arm, k_max, skip = None, 0, frozenset()
            drafted, q_rows, q_x, draft_s, steps = self.draft(pos, skip, k_max, det)
            since_dp += 1
            dp_due = first_dp or (dp is not None and since_dp >= (policy.loi(cfg.loi) if policy else cfg.loi)
                                  and (policy is None or arm is not None))
            t0 = self.now()
            res = self.runner.forward(self.ids(self.out[-1:] + drafted), pos, hidden=dp_due)
            logits, hs = res if dp_due else (res, None)
            acc, nxt, kind, p_x = self.verify(drafted, q_rows, logits)
            verify_s = self.now() - t0
            self.runner.rollback(pos + acc + 1)                  # keep the accepted, forget the rest
            emitted = self.append(drafted[:acc] + [nxt])
            self.count(len(drafted), acc, draft_s, verify_s)
            if policy is not None:
                policy.observe(arm, len(drafted), acc, steps, draft_s, verify_s)
            yield from self.emit(Round(
                index=r, skip=sorted(skip) if k_max > 0 else [], drafted=drafted,
                drafted_text=[self.piece(t) for t in drafted], draft_probs=q_x, target_probs=p_x, accepted=acc,
                next_token=nxt, next_text=self.piece(nxt), next_kind=kind, emitted=emitted, draft_s=draft_s,
                verify_s=verify_s, start=len(self.out) - len(emitted)))
            pos += acc + 1
            r += 1
            if dp_due and self.finished() is None:
                dp, choice = self.choose_layers(hs[:, acc], pos - 1, r, policy)
                since_dp = 0
                yield from self.emit(choice)
        yield self.done(reason)

    def plan(self, policy, dp):
        """(auto arm or None, K for this round, skip set, DET) — fixed settings unless auto."""
        cfg = self.cfg
        arm, k_max, skip, det = None, cfg.draft_len, frozenset(dp.skip if dp else ()), cfg.det
        if policy is not None:              # auto: M and K from measured costs; K replaces DET
            arm, k_max, _ = policy.plan()
            skip, det = (frozenset(dp.skip_for(arm.M)) if arm and dp else frozenset()), 0.0
        return arm, min(k_max, cfg.max_new_tokens - len(self.out) - 1), skip, det

    def draft(self, pos: int, skip: frozenset, k_max: int, det: float):
        """Up to k_max tokens from the layer-skipping draft; stops when its top-1 prob < DET."""
        cfg = self.cfg
        t0 = self.now()
        drafted, q_rows, q_x = [], [], []
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
            drafted.append(tok)
            q_rows.append(q)
            q_x.append(float(q[tok]))
            if tok in self.eos:
                break
            cur = tok
        return drafted, q_rows, q_x, self.now() - t0, steps

    def verify(self, drafted, q_rows, logits):
        """Accepted count, next token, its kind, and p(x) of each drafted token."""
        k = len(drafted)
        if self.greedy:
            acc, nxt, kind = greedy_accept(drafted, logits.argmax(-1).tolist())
            p_x = (torch.softmax(logits[:k].float(), -1)[torch.arange(k), self.ids(drafted)].tolist()
                   if k else [])
            return acc, nxt, kind, p_x
        p = warp(logits, self.cfg.temperature, self.cfg.top_p)
        q = torch.stack(q_rows) if k else p[:0]
        acc, nxt, kind = speculative_accept(drafted, q, p, self.gen)
        p_x = p[torch.arange(k), self.ids(drafted)].tolist() if k else []
        return acc, nxt, kind, p_x

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

    def count(self, drafted: int, accepted: int, draft_s: float, verify_s: float) -> None:
        t = self.totals
        t["rounds"] += 1
        t["drafted"] += drafted
        t["accepted"] += accepted
        t["draft_s"] += draft_s
        t["verify_s"] += verify_s

    def choose_layers(self, xs: torch.Tensor, p: int, round_index: int, policy=None):
        M = self.cfg.num_skip
        res = choose_skip_set(self.runner, xs, p, M)
        self.totals["dp_s"] += res.seconds
        self.totals["dp_calls"] += 1
        if policy is not None:
            policy.observe_dp(res.seconds)
        return res, LayerChoice(round=round_index, position=p, skip=res.skip, D=res.D, path=res.path,
                                seconds=res.seconds, num_skip=M)

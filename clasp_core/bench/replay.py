"""Replayed acceptance: the real CLaSp loop on a random-weight shape, with acceptance drawn to mean τ.

Random weights accept almost nothing, so the one input a shape cannot give is how many drafts the
full model accepts. Everything else runs as the engine runs it, on the engine's own pieces:

- draft: up to K single-token ``Runner.forward`` calls with the M chosen layers skipped, each
  reading its top token and probability back to the host (as ``decoding`` does);
- verify: one ``Runner.forward`` over the newest token and the drafts (with the per-layer states
  when the layers are chosen again after the round), and the full model's token read back;
- rollback: ``Runner.rollback`` to the accepted length;
- layers: the strategy's ``choose`` (``clasp``: ``layer_dp.choose_skip_set``) every LOI rounds, on
  the verification's states of the last accepted token.

The accepted count a of a round is drawn, not read from the model: each draft is accepted with
probability alpha until the first rejection, at most K (the prefix rule; P(a) = alpha^a (1 - alpha)
for a < K, P(K) = alpha^K), with alpha solved so that E[a + 1] = ``costs.expected_tokens(alpha, K)``
is the asked τ. A seeded ``random.Random`` draws them (stratified, see ``Acceptance``), the same
sequence in every repeat. a is then capped at what the round drafted (and at the tokens left).
Draft length: ``oracle`` stops drafting right after the first rejected draft (min(K, a + 1) steps:
a perfect DET, the ``costs.projection`` assumption k̄ ≈ τ); ``full`` drafts K every round (no DET).

Vanilla is plain single-token steps on the same Runner (CUDA graphs on a GPU). Both decode the
same number of tokens from the same prefill; the prefill and the first layer choice are outside
the clock for both. Every number here is a measurement of the loop with replayed acceptance,
not of a model's real τ.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..costs import expected_tokens
from ..strategies import STRATEGIES, make_strategy
from .common import sync

LABEL = "replayed acceptance"
DRAFT_STOPS = ("oracle", "full")


# ---- the drawn acceptance ------------------------------------------------------------------------------
def alpha_for(tau: float, K: int) -> float:
    """The per-draft acceptance probability whose rounds yield ``tau`` tokens on average (K drafts at most)."""
    if not 1.0 <= tau <= K + 1:
        raise ValueError(f"tau must be between 1 and K + 1 = {K + 1} for K = {K}, got {tau}")
    lo, hi = 0.0, 1.0
    for _ in range(60):                                 # expected_tokens rises with alpha: bisect
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_tokens(mid, K) < tau else (lo, mid)
    return (lo + hi) / 2


class Acceptance:
    """Accepted drafts per round, drawn with the prefix rule at a fixed alpha, at most K.

    By the inverse of the distribution, a = min(K, floor(log(1 - u) / log alpha)) for u uniform in [0, 1);
    the u are stratified: each block of ``BLOCK`` rounds takes one u from each 1/BLOCK of [0, 1), in a
    shuffled order, so that even a short decode's mean acceptance sits near tau (plain draws would wander
    by about 0.3 tokens over 50 rounds)."""

    BLOCK = 32

    def __init__(self, tau: float, K: int, seed: int = 0):
        self.tau, self.K, self.alpha = tau, K, alpha_for(tau, K)
        self.rng = random.Random(seed)
        self.left: list[float] = []

    def draw(self) -> int:
        if not self.left:
            self.left = [(j + self.rng.random()) / self.BLOCK for j in range(self.BLOCK)]
            self.rng.shuffle(self.left)
        u = self.left.pop()
        if self.alpha <= 0.0:
            return 0
        if self.alpha >= 1.0:
            return self.K
        return min(self.K, math.floor(math.log1p(-u) / math.log(self.alpha)))


# ---- one decode ------------------------------------------------------------------------------------------
@dataclass
class Tally:
    """One decode: its seconds, each round as (draft steps, drafts, accepted), each layer choice after the
    first (seconds on the decode's clock) and every set chosen (the first, before the clock, included)."""

    seconds: float = 0.0
    end_length: int = 0                                             # the cache's valid length after it
    rounds: list[tuple[int, int, int]] = field(default_factory=list)
    dp_seconds: list[float] = field(default_factory=list)
    skips: list[list[int]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Tokens emitted: the accepted drafts and the full model's own token of each round."""
        return sum(a + 1 for _, _, a in self.rounds)

    def total(self, part: int) -> int:
        return sum(r[part] for r in self.rounds)


def ids(runner, xs: list[int]) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.long, device=runner.device)


def decode_vanilla(runner, cur: int, pos: int, n: int) -> Tally:
    """n plain full-model steps from token ``cur`` at position ``pos`` (the cache holds pos slots)."""
    sync(runner.device)
    t0 = time.perf_counter()
    for _ in range(n):
        logits = runner.forward(ids(runner, [cur]), pos, last_only=True)
        cur = int(logits[-1].argmax())
        pos += 1
    sync(runner.device)
    return Tally(seconds=time.perf_counter() - t0, end_length=runner.length, rounds=[(0, 0, 0)] * n)


def draft(runner, cur: int, pos: int, skip: frozenset, steps: int) -> list[int]:
    """``steps`` tokens from the layer-skipping draft, each read back with its probability as the engine does."""
    tokens = []
    for k in range(steps):
        logits = runner.forward(ids(runner, [cur]), pos + k, skip, last_only=True)[-1]
        conf, tok = torch.softmax(logits.float(), -1).max(-1)
        float(conf)                                     # the engine reads it for DET
        cur = int(tok)
        tokens.append(cur)
    return tokens


def verify(runner, cur: int, drafted: list[int], pos: int, a: int, states: bool):
    """The full model over [cur, drafts]: its own token after the a accepted drafts, and the block's
    per-layer states when asked (the next layer choice reads them)."""
    block = ids(runner, [cur] + drafted)
    res = runner.forward(block, pos, hidden=states, head=False)
    y, hs = res if states else (res, None)
    # a CPU backend's head reads the rows up to the rejection (as the engine's greedy verification), others all
    rows = y[:a + 1] if drafted and getattr(runner.backend, "rows_head", False) else y
    logits = runner.verify_logits(rows, None)
    return int(logits[:a + 1].argmax(-1).tolist()[a]), hs


def decode_clasp(runner, strategy, acceptance: Acceptance, cur: int, pos: int, xs0: torch.Tensor, M: int, K: int,
                 loi: int, n: int, draft_stop: str = "oracle") -> Tally:
    """n tokens by the CLaSp loop with drawn acceptance; ``xs0``: the prefill's states of the token at pos - 1."""
    tally = Tally()
    skip = frozenset(strategy.choose(runner, xs0, pos - 1, M).skip)      # the first choice: before the clock
    tally.skips.append(sorted(skip))
    since = 0
    sync(runner.device)
    t0 = time.perf_counter()
    while tally.tokens < n:
        k_max = min(K, n - tally.tokens - 1)
        a = min(acceptance.draw(), k_max)
        steps = min(k_max, a + 1) if draft_stop == "oracle" else k_max
        drafted = draft(runner, cur, pos, skip, steps)
        since += 1
        again = strategy.due(since, loi) and tally.tokens + a + 1 < n
        cur, hs = verify(runner, cur, drafted, pos, a, states=again)
        runner.rollback(pos + a + 1)
        pos += a + 1
        tally.rounds.append((steps, len(drafted), a))
        if again:
            sync(runner.device)
            t1 = time.perf_counter()
            skip = frozenset(strategy.choose(runner, hs[:, a], pos - 1, M).skip)
            tally.dp_seconds.append(time.perf_counter() - t1)
            tally.skips.append(sorted(skip))
            since = 0
    sync(runner.device)
    tally.seconds = time.perf_counter() - t0
    tally.end_length = runner.length
    return tally


# ---- the methods a replay can run ---------------------------------------------------------------------
def replay_strategy(name: str) -> Callable:
    """A decode for a layer-choice strategy whose choice runs apart from the verification (``choose``)."""
    def run(runner, acceptance, cur, pos, xs0, M, K, loi, n, draft_stop):
        return decode_clasp(runner, make_strategy(name), acceptance, cur, pos, xs0, M, K, loi, n, draft_stop)
    return run


# name -> decode(runner, acceptance, cur, pos, xs0, M, K, loi, n, draft_stop) -> Tally.
# ``clasp-fused`` (the layer DP inside the next verification pass, its set used one round later) plugs in
# HERE once its strategy is registered: add its decode, which verifies through the strategy's fused call
# instead of ``verify`` + ``strategy.choose``. Until then ``methods`` refuses the name with a clear message.
DECODES: dict[str, Callable] = {"clasp": replay_strategy("clasp")}


def available() -> list[str]:
    """The methods this engine can replay: a decode here and a registered strategy of that name."""
    return [m for m in DECODES if m in STRATEGIES]


def methods(text: str) -> list[str]:
    """A comma list of methods to replay (``all``: every available one); ValueError says what is missing."""
    if text.strip() == "all":
        return available()
    out = [m.strip() for m in text.split(",") if m.strip()]
    for m in out:
        if m not in STRATEGIES:
            raise ValueError(f"method {m!r} is not a layer-choice strategy of this engine "
                             f"(have: {', '.join(STRATEGIES)})")
        if m not in DECODES:
            raise ValueError(f"method {m!r} has no replayed decode yet (clasp_core/bench/replay.py, DECODES); "
                             f"replayable: {', '.join(available())}")
    if not out:
        raise ValueError("no method to replay")
    return out


# ---- a repeated measurement --------------------------------------------------------------------------
def median_run(decode: Callable[[], Tally], reps: int) -> Tally:
    """One warm-up decode, then the median of ``reps`` by seconds."""
    decode()
    runs = sorted((decode() for _ in range(reps)), key=lambda t: t.seconds)
    return runs[len(runs) // 2]


def summary(t: Tally, step_s: float | None = None) -> dict:
    """A decode's numbers for the JSON and the table (``step_s``: one vanilla step, for the DP in steps)."""
    n, rounds = t.tokens, len(t.rounds)
    out = dict(new_tokens=n, seconds=t.seconds, tokens_per_s=n / t.seconds if t.seconds else 0.0, rounds=rounds,
               end_length=t.end_length)
    if t.skips:
        dp_s, calls = sum(t.dp_seconds), len(t.dp_seconds)
        dp_ms = dp_s / calls * 1e3 if calls else None
        out.update(tau_replayed=n / rounds, draft_steps=t.total(0), drafted=t.total(1), accepted=t.total(2),
                   dp_calls=calls, dp_s=dp_s, dp_share=dp_s / t.seconds, dp_ms=dp_ms,
                   dp_steps=dp_ms / 1e3 / step_s if step_s and dp_ms is not None else None, skip_sets=len(t.skips))
    return out

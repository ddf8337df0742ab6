"""Prompt lookup: drafts copied from the context (the prompt and the output so far), free to make.

The matching rule is transformers' ``PromptLookupCandidateGenerator``: try the longest n-gram first
(n = 3, 2, 1); take the context's last n tokens, find their FIRST occurrence from the left that has
at least one token after it, and propose the (up to k) tokens that followed it. A continuation may
run into the suffix itself (overlapping matches) and stops at the context's end. transformers'
``generate`` tries n-grams of up to 2 by default (``max_matching_ngram_size``); the engine tries 3.

The first occurrence of an n-gram never changes as the context grows, so an index keeps the first
start of every n-gram seen and a lookup is a few dictionary probes, not a scan of the context.
Appending a token registers the n-grams that end at it; a suffix whose first occurrence is itself
has no earlier match, exactly as in transformers' scan.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_NGRAM = 3


@dataclass
class Match:
    """A copied draft: ``tokens`` are the context's tokens from ``copied_from`` on."""

    n: int                  # length of the matched n-gram
    start: int              # context position of the earlier occurrence's first token
    ngram: list[int]        # the n-gram (the context's last n tokens)
    tokens: list[int]       # the proposed continuation

    @property
    def copied_from(self) -> int:
        return self.start + self.n

    def record(self, prompt_len: int) -> dict:
        """The trace's form: positions in the context (prompt, then output) and where they fall."""
        return dict(n=self.n, ngram=list(self.ngram), start=self.start, copied_from=self.copied_from,
                    length=len(self.tokens), in_prompt=self.copied_from < prompt_len, prompt_len=prompt_len)


class NgramIndex:
    """The context and the first start of each of its n-grams (n = 1..max_n)."""

    def __init__(self, context: list[int], max_n: int = MAX_NGRAM):
        if max_n < 1:
            raise ValueError(f"the longest n-gram must be at least 1, got {max_n}")
        self.max_n = max_n
        self.context: list[int] = []
        self.first: list[dict[tuple, int]] = [{} for _ in range(max_n + 1)]
        self.extend(context)

    def extend(self, tokens: list[int]) -> None:
        ctx = self.context
        for t in tokens:
            ctx.append(int(t))
            end = len(ctx)
            for n in range(1, min(self.max_n, end) + 1):
                self.first[n].setdefault(tuple(ctx[end - n:end]), end - n)

    def match(self, k: int) -> Match | None:
        """The longest n-gram's first earlier occurrence and up to k tokens after it; None if none or k < 1."""
        ctx, size = self.context, len(self.context)
        if k < 1:
            return None
        for n in range(min(self.max_n, size - 1), 0, -1):
            gram = tuple(ctx[size - n:])
            s = self.first[n].get(gram)
            if s is not None and s + n < size:
                return Match(n, s, list(gram), ctx[s + n:s + n + k])
        return None


@dataclass
class CopyPolicy:
    """How much of a match to draft: all of it (fixed settings), or, with auto, what pays.

    A copied draft costs nothing to make, so a round of k copied tokens costs one verification,
    1 + beta * k plain steps (beta: auto's fitted verify growth). With per-token acceptance alpha
    it yields (1 - alpha^(k+1)) / (1 - alpha) tokens. Auto copies the k that maximises tokens per
    unit when that beats both a plain step (by auto's margin) and auto's own plan for the round.
    alpha is counted per n-gram length (a 3-gram match is a better bet than a 1-gram one), with
    old rounds fading (``memory``), since whether the output copies its context changes within a
    run; a length auto stopped copying is probed with one token every ``probe`` matches, so it
    notices when copying pays again.
    """

    auto: bool
    memory: float = 0.8          # weight of the past at each new observation
    probe: int = 8

    def __post_init__(self):
        self.accepted = {n: 0.0 for n in range(1, MAX_NGRAM + 1)}
        self.trials = {n: 0.0 for n in range(1, MAX_NGRAM + 1)}
        self.passed = {n: 0 for n in range(1, MAX_NGRAM + 1)}     # matches not copied since the last copy

    def alpha(self, n: int) -> float:
        return min(0.98, (self.accepted[n] + 1) / (self.trials[n] + 2))

    def length(self, match: Match, policy, rival_speed: float) -> int:
        """Tokens of ``match`` to draft (0: draft none of them)."""
        if not self.auto:
            return len(match.tokens)
        alpha, beta = self.alpha(match.n), policy.beta
        best_k, best = 0, max(rival_speed, policy.margin)
        for k in range(1, len(match.tokens) + 1):
            speed = (1 - alpha ** (k + 1)) / (1 - alpha) / (1 + beta * k)
            if speed > best:
                best_k, best = k, speed
        if best_k == 0:
            self.passed[match.n] += 1
            if self.passed[match.n] >= self.probe:
                best_k = 1
        return best_k

    def observe(self, match: Match, drafted: int, accepted: int, verify_s: float, policy) -> None:
        """Count the match's acceptance; with auto, its verification refines auto's verify cost."""
        n, w = match.n, self.memory
        self.passed[n] = 0
        self.accepted[n] = w * self.accepted[n] + accepted
        self.trials[n] = w * self.trials[n] + accepted + (1 if accepted < drafted else 0)
        if self.auto and drafted and hasattr(policy, "verify_s"):
            policy.verify_s.append((drafted, verify_s))   # auto's verify-cost window (its beta) learns from it too

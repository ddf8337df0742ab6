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

from .auto import Policy

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


# Beta prior (accepted, rejected) on the per-token acceptance of a copy after an n-gram match. A one-token
# match is weak evidence that the output is quoting: replaying the matcher over the greedy outputs of
# the dev sample's first question of each of the six tasks (SmolLM2-135M, fp32, 128 tokens), the first
# copied token was right after 34 of 218 unigram matches (16%), 25 of 64 bigram ones (39%) and 13 of 24
# trigram ones (54%). Starting unigram copies at 1/4, not 1/2, keeps auto from paying a rejected
# verification several times per run before it has learnt that.
PRIOR = {1: (1.0, 3.0), 2: (1.0, 1.0), 3: (1.0, 1.0)}


@dataclass
class CopyPolicy:
    """How much of a match to draft: all of it (fixed settings), or, with auto, what pays.

    A copied draft costs nothing to make, so a round of k copied tokens costs one verification,
    ``policy.r_verify(k)`` plain steps: measured by this run at that k (auto keeps a window per k),
    else auto's line 1 + beta * k. With per-token acceptance alpha it yields
    (1 - alpha^(k+1)) / (1 - alpha) tokens. Auto copies the k that maximises tokens per unit when
    that beats both a plain step (by auto's margin) and auto's own plan for the round, so the copy
    length is capped where acceptance (measured) stops paying for the longer verification (measured).
    alpha is counted per n-gram length (a 3-gram match is a better bet than a 1-gram one, ``PRIOR``),
    with old rounds fading (``memory``), since whether the output copies its context changes within a
    run; a length auto stopped copying is probed with one token after ``probe`` matches, so it notices
    when copying pays again. A probe that fails doubles that length's wait (up to ``probe_max``), so a
    run that never copies pays for a handful of probes, not one every few tokens.
    """

    auto: bool
    memory: float = 0.8          # weight of the past at each new observation
    probe: int = 8
    probe_max: int = 64

    def __post_init__(self):
        self.accepted = {n: PRIOR[n][0] for n in range(1, MAX_NGRAM + 1)}
        self.trials = {n: sum(PRIOR[n]) for n in range(1, MAX_NGRAM + 1)}
        self.passed = {n: 0 for n in range(1, MAX_NGRAM + 1)}     # matches not copied since the last copy
        self.wait = {n: self.probe for n in range(1, MAX_NGRAM + 1)}    # matches passed before a probe
        self.probing = {n: False for n in range(1, MAX_NGRAM + 1)}

    def alpha(self, n: int) -> float:
        return min(0.98, self.accepted[n] / self.trials[n])

    def length(self, match: Match, policy: Policy, rival_speed: float) -> int:
        """Tokens of ``match`` to draft (0: draft none of them)."""
        if not self.auto:
            return len(match.tokens)
        if policy.c1 is None:
            return 0                     # no plain step measured yet: nothing to price a copy against
        alpha, n = self.alpha(match.n), match.n
        best_k, best = 0, max(rival_speed, policy.margin)
        for k in range(1, len(match.tokens) + 1):
            speed = (1 - alpha ** (k + 1)) / (1 - alpha) / policy.r_verify(k)
            if speed > best:
                best_k, best = k, speed
        self.probing[n] = False
        if best_k == 0:
            self.passed[n] += 1
            if self.passed[n] >= self.wait[n]:
                best_k, self.probing[n] = 1, True
        return best_k

    def observe(self, match: Match, drafted: int, accepted: int, verify_s: float, policy: Policy) -> None:
        """Count the match's acceptance; with auto, its verification refines auto's verify costs."""
        n, w = match.n, self.memory
        self.passed[n] = 0
        if self.probing[n]:
            self.wait[n] = self.probe if accepted else min(self.probe_max, 2 * self.wait[n])
            self.probing[n] = False
        self.accepted[n] = w * self.accepted[n] + accepted
        self.trials[n] = w * self.trials[n] + accepted + (1 if accepted < drafted else 0)
        if self.auto and drafted:
            policy.observe_verify(drafted, verify_s)   # auto's verify costs (its beta, its cost per k) learn from it

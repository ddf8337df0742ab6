"""How much to draft each round: the user's fixed settings, or adaptive skipping ("auto").

Both policies answer ``plan()`` -> (arm with M, K, predicted speed; arm None = a plain
full-model step) and learn from ``observe_prefill()``, ``observe()`` and ``observe_dp()``; the
decoding loop never asks which one it has (``Policy`` is the protocol both follow).
``FixedPolicy`` drafts K tokens with M skipped layers every round, stops a draft when its
confidence falls below DET and chooses layers at the prefill.

Auto picks M and K each round to maximise expected tokens per second, and promises never to be
slower than plain decoding by more than noise. Everything is measured by the run itself, in
units of one full-model step (c1), and priced with the cost model of ``costs.py``:
- c1: the median of recent plain steps, the run's first plain step left out (it pays warm-up:
  allocation, caches, a machine still busy with the last run); while drafting, every verification
  of k + 1 positions bounds c1 from above (it never costs less than one position), and a plain
  step every PROBE_EVERY drafting rounds re-measures it;
- r_d(M): median cost of recent draft steps with M layers skipped;
- r_v(k) = 1 + beta * k: beta is the median slope of recent verifications;
- alpha(M): per-token acceptance of the draft, counted from the rounds (Beta(1, 1) prior);
- the layer DP's cost, spread over LOI rounds (auto stretches LOI to keep it near 3% of time).
Medians, not means: one slow step (a warm-up, a page render, a background job) moves none of them.
With per-token acceptance alpha, k drafted tokens yield E = (1 - alpha^(k+1)) / (1 - alpha)
tokens per round. If no (M, K) beats a plain step by ``margin``, the round is a plain step.
Predictions can still be wrong, so auto also watches what drafting really delivers: when the
tokens per second of its recent drafting rounds fall below plain steps', it falls back to plain
steps for a while (a cooldown that doubles each time) and re-measures.
An arm not yet tried gets an optimistic acceptance for its first few draft tokens, so each
is tried a little, and no more than that where it does not pay.

``AutoPolicy.note`` says why the last plan was made (measured costs, each choice's predicted
speed); the loop stores it in ``Round.auto`` so the page can tell it.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from statistics import median
from typing import ClassVar, Protocol

from .costs import Costs, draft_step_estimate, expected_tokens, verify_cost
from .metrics import DEFAULT_SKIP_FRACTION

WINDOW = 9                  # recent samples each cost estimate is the median of


def _window() -> deque:
    return deque(maxlen=WINDOW)


@dataclass
class Arm:
    M: int
    trials: int = 0          # draft tokens put to the test (accepted + first rejected)
    accepted: int = 0
    step_s: deque = field(default_factory=_window, repr=False)   # seconds of recent draft steps

    def alpha(self, bonus: float = 0.0) -> float:
        mean = (self.accepted + 1) / (self.trials + 2)
        return min(0.98, mean + bonus)


class Policy(Protocol):
    """How much to draft each round, and what the policy learns from the run."""

    det: float                      # stop a draft below this top-1 probability (0: never)
    choose_at_prefill: bool         # choose the first skip set from the prompt's last token
    note: dict | None               # why the last plan was made (Round.auto), None if nothing to tell
    margin: float                   # how much faster than a plain step a draft must be predicted

    @property
    def c1(self) -> float | None:
        """Seconds of one plain step as measured by the run; None until measured."""

    @property
    def beta(self) -> float:
        """Verify cost growth per drafted token, relative to c1."""

    def r_verify(self, k: int) -> float:
        """Cost of verifying k drafts, in plain steps."""

    def observe_verify(self, k: int, seconds: float) -> None:
        """A verification of k drafts that no planned round priced (a copied draft's)."""

    def plan(self) -> tuple[Arm | None, int, float]:
        """(arm, K, predicted speed in plain steps) for the next round; arm None = a plain step."""

    def loi(self, base: int) -> int:
        """Rounds between two layer choices, given the setting."""

    def observe_prefill(self, seconds: float, tokens: int) -> None:
        """The prompt's pass: ``tokens`` positions in ``seconds``."""

    def observe(self, arm: Arm | None, drafted: int, accepted: int, draft_steps: int, draft_s: float,
                verify_s: float) -> None:
        """One round's costs and how many of its drafts were accepted."""

    def observe_dp(self, seconds: float) -> None:
        """The cost of one layer choice by the DP."""


@dataclass
class FixedPolicy:
    """The settings as given: M, K and DET every round, layer choice every LOI rounds."""

    M: int
    K: int
    det: float
    choose_at_prefill: ClassVar[bool] = True   # the first skip set comes from the prompt's last token
    note: ClassVar[None] = None                # fixed settings have no reasons to tell
    margin: ClassVar[float] = 1.0               # nor a margin: they draft every round
    c1: ClassVar[None] = None                  # and measure nothing
    beta: ClassVar[float] = 0.0

    def __post_init__(self):
        self.arm = Arm(self.M)

    def r_verify(self, k: int) -> float:
        return verify_cost(self.beta, k)

    def observe_verify(self, k: int, seconds: float) -> None:
        """Fixed settings learn nothing from a verification."""

    def plan(self) -> tuple[Arm, int, float]:
        return self.arm, self.K, 1.0

    def loi(self, base: int) -> int:
        return base

    def observe_prefill(self, seconds: float, tokens: int) -> None:
        """Fixed settings learn nothing from the prompt's pass."""

    def observe(self, arm: Arm | None, drafted: int, accepted: int, draft_steps: int, draft_s: float,
                verify_s: float) -> None:
        """Nor from a round."""

    def observe_dp(self, seconds: float) -> None:
        """Nor from the layer choice's cost."""


@dataclass
class AutoPolicy:
    det: ClassVar[float] = 0.0                   # K replaces DET: drafts run to the planned length
    choose_at_prefill: ClassVar[bool] = False   # layers are chosen only once drafting pays
    WARMUP_STEPS: ClassVar[int] = 1             # the run's first plain steps, left out of c1
    MIN_PLAIN: ClassVar[int] = 3                # plain steps measured before any draft is priced
    PROBE_EVERY: ClassVar[int] = 16             # drafting rounds between two plain steps that re-measure c1
    CHECK_ROUNDS: ClassVar[int] = 6             # drafting rounds whose real speed is checked against plain steps
    COOLDOWN: ClassVar[int] = 8                 # plain steps after a fall-back (doubles at each one)
    num_layers: int
    M_max: int
    K_max: int
    head_share: float                    # lm_head's share of a step's weights (draft cost floor)
    arms: list[Arm] = field(default_factory=list)
    prefill: tuple[float, int] | None = field(default=None, init=False)   # (seconds, tokens), observe_prefill
    margin: float = 1.05                 # draft only where it is predicted clearly faster
    explore: float = 0.25                # optimism added to an arm's acceptance while it is new
    explore_trials: int = 4

    def __post_init__(self):
        ms = sorted({max(1, round(f * self.num_layers)) for f in (0.2, DEFAULT_SKIP_FRACTION)} | {self.M_max})
        self.arms = [Arm(m) for m in ms if 1 <= m <= self.M_max]
        self.plain_seen = 0                       # plain steps observed, warm-up included
        self.plain_s: deque = _window()           # seconds of recent plain steps (warm-up left out)
        self.verify_s: deque = _window()          # (k, seconds) of recent verifications of k drafts
        self.verify_at: dict[int, deque] = {}     # k -> seconds of recent verifications of exactly k drafts
        self.dp_samples: deque = _window()
        self.recent: deque = deque(maxlen=self.CHECK_ROUNDS)   # (tokens, seconds) of recent drafting rounds
        self.since_plain = 0                      # drafting rounds since the last plain step
        self.hold = 0                             # plain steps still to take after a fall-back
        self.cooldown = self.COOLDOWN
        self.fallbacks = 0
        self.note: dict | None = None             # why the last plan was made (stored in Round.auto)

    # ---- the measured costs ----------------------------------------------------------------
    @property
    def c1(self) -> float | None:
        """Seconds of one full single-token step; None until MIN_PLAIN steps after the warm-up."""
        if len(self.plain_s) < self.MIN_PLAIN:
            return None
        c = median(self.plain_s)
        recent = [s for _, s in self.verify_s][-3:]
        if recent:                        # verifying k + 1 positions costs at least one: a stale c1 is capped
            c = min(c, median(recent))
        return c

    @property
    def beta(self) -> float:
        """Verify cost growth per drafted token, relative to c1 (a guess from the prefill until measured)."""
        c1 = self.c1
        if c1 and self.verify_s:
            return median(max(0.0, (s / c1 - 1.0) / k) for k, s in self.verify_s)
        if c1 and self.prefill and self.prefill[1] > 1:
            # the prompt's pass prices extra positions: prefill(n) ~ c1 * (1 + beta * (n - 1))
            pre_s, n = self.prefill
            return min(1.0, max(0.02, (pre_s / c1 - 1.0) / (n - 1)))
        return 0.15

    def r_verify(self, k: int) -> float:
        """Cost of verifying k drafts, in plain steps: the median of this run's verifications of exactly k
        when it has seen two, else the linear model 1 + beta * k, and never less than what fewer drafts
        measured (a longer block costs no less). On a CPU the cost is no line: short blocks run on other
        products than longer ones (backends/cpu.py: the engine's own kernel up to 16 rows, else torch's
        [in, out] copies up to 3), a greedy verification there stops computing logits at the first rejected
        draft (``Cpu.verify_logits``), and the prefill's beta (a long, efficient block) prices a short block
        far too cheaply."""
        c1, seen = self.c1, self.verify_at.get(k)
        if c1 and seen and len(seen) >= 2:
            return max(1.0, median(seen) / c1)
        floor = max((median(s) / c1 for j, s in self.verify_at.items() if j < k and s), default=1.0) if c1 else 1.0
        return max(floor, verify_cost(self.beta, k))

    def observe_verify(self, k: int, seconds: float) -> None:
        """A verification of k drafts: it refines beta and the measured cost at k."""
        self.verify_s.append((k, seconds))
        self.verify_at.setdefault(k, _window()).append(seconds)

    @property
    def dp_s(self) -> float:
        return median(self.dp_samples) if self.dp_samples else 0.0

    def r_draft(self, arm: Arm) -> float:
        c1 = self.c1
        if arm.step_s and c1:
            return median(arm.step_s) / c1
        return draft_step_estimate(self.head_share, self.num_layers, arm.M)

    def loi(self, base: int) -> int:
        """Run the DP rarely enough that it stays near 3% of the time."""
        c1, dp = self.c1, self.dp_s
        if not c1 or not dp:
            return base
        return max(base, math.ceil(dp / (0.03 * c1)))

    def costs(self, arm: Arm, k: int, alpha: float, est: tuple | None = None) -> Costs:
        """One round of k drafts with this arm, priced by the cost model (costs.py); ``est``: the
        (c1, beta, dp, loi) of this plan, measured once for all the arms and K it prices."""
        c1, beta, dp, loi = est or (self.c1 or 0.0, self.beta, self.dp_s, self.loi(1))
        return Costs(step_s=c1, k=k, r_draft=self.r_draft(arm), r_verify=verify_cost(beta, k),
                     dp=dp / c1 if c1 else 0.0, loi=loi, tau=expected_tokens(alpha, k))

    def measured_speed(self) -> float | None:
        """Tokens per second of the recent drafting rounds, in plain steps (None: too few yet)."""
        c1 = self.c1
        if not c1 or len(self.recent) < self.CHECK_ROUNDS:
            return None
        tokens, seconds = (sum(x) for x in zip(*self.recent))
        return tokens * c1 / seconds if seconds > 0 else None

    # ---- the plan ---------------------------------------------------------------------------
    def plan(self) -> tuple[Arm | None, int, float]:
        """(arm, K, predicted speed in plain steps); arm None = a plain step. Sets ``note``."""
        c1 = self.c1
        if c1 is None or not self.arms:
            return self._plain("measure")              # first measure what a plain step costs
        if self.hold > 0:
            return self._plain("hold")
        if self.since_plain >= self.PROBE_EVERY:
            return self._plain("probe")
        best = (None, 0, 0.0, None)
        est = (c1, self.beta, self.dp_s, self.loi(1))
        for arm in self.arms:
            bonus = self.explore if arm.trials < self.explore_trials else 0.0
            alpha = arm.alpha(bonus)
            for k in range(1, self.K_max + 1):
                speed = self.costs(arm, k, alpha, est).speedup
                if speed > best[2]:
                    best = (arm, k, speed, alpha)
        arm, k, speed, alpha = best
        self.note = self._note("model", arm, k, speed, alpha)
        if arm is None or speed <= self.margin:
            self.note["choice"] = "plain"
            return None, 0, 1.0
        self.note["choice"] = "draft"
        return arm, k, speed

    def _plain(self, reason: str) -> tuple[None, int, float]:
        self.note = self._note(reason, None, 0, None, None)
        self.note["choice"] = "plain"
        return None, 0, 1.0

    def _note(self, reason, arm, k, speed, alpha) -> dict:
        """What the page says about this plan: every measured cost and each choice's predicted speed."""
        c1 = self.c1
        note = {"reason": reason, "step_ms": c1 * 1e3 if c1 else None, "verify_slope": self.beta if c1 else None,
                "plain_speed": 1.0, "measured_speed": self.measured_speed(), "hold": self.hold,
                "fallbacks": self.fallbacks, "margin": self.margin,
                # the windows the page names: how many samples each median above is over
                "plain_n": len(self.plain_s), "verify_n": len(self.verify_s)}
        if arm is not None:
            note.update(M=arm.M, K=k, draft_speed=speed, alpha=alpha, r_draft=self.r_draft(arm),
                        draft_measured=bool(arm.step_s), r_verify=verify_cost(self.beta, k),
                        draft_n=len(arm.step_s), trials=arm.trials, accepted=arm.accepted,
                        optimism=self.explore if arm.trials < self.explore_trials else 0.0)
        return note

    # ---- what a round tells ----------------------------------------------------------------
    def observe_prefill(self, seconds: float, tokens: int) -> None:
        """The prompt's pass prices extra positions: auto's first guess at beta, until verifications
        are measured."""
        self.prefill = (seconds, tokens)

    def observe_plain(self, seconds: float) -> None:
        self.plain_seen += 1
        self.since_plain = 0
        if self.hold > 0:
            self.hold -= 1
        if self.plain_seen > self.WARMUP_STEPS:
            self.plain_s.append(seconds)

    def observe(self, arm: Arm | None, drafted: int, accepted: int, draft_steps: int, draft_s: float,
                verify_s: float) -> None:
        """What one round cost and how many drafts survived (arm None: a plain step)."""
        if arm is None:
            self.observe_plain(verify_s)
            return
        arm.accepted += accepted
        arm.trials += accepted + (1 if accepted < drafted else 0)
        if draft_steps:
            arm.step_s.append(draft_s / draft_steps)
        if drafted:
            self.observe_verify(drafted, verify_s)
        self.since_plain += 1
        self.recent.append((accepted + 1, draft_s + verify_s))
        speed = self.measured_speed()
        if speed is not None and speed < 1.0:            # drafting really is slower: back to plain steps
            self.hold, self.cooldown = self.cooldown, 2 * self.cooldown
            self.fallbacks += 1
            self.recent.clear()

    def observe_dp(self, seconds: float) -> None:
        self.dp_samples.append(seconds)


def head_share(model) -> float:
    """lm_head parameters / (lm_head + decoder layers): the part of a step no skip removes."""
    head = model.lm_head.weight.numel()
    layers = sum(p.numel() for p in model.model.layers.parameters())
    return head / (head + layers)

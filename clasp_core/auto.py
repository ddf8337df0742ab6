"""How much to draft each round: the user's fixed settings, or adaptive skipping ("auto").

Both policies answer ``plan()`` -> (arm with M, K, predicted speed; arm None = a plain
full-model step) and learn from ``observe()`` / ``observe_dp()``; the decoding loop never
asks which one it has. ``FixedPolicy`` drafts K tokens with M skipped layers every round,
stops a draft when its confidence falls below DET and chooses layers at the prefill.

Auto picks M and K each round to maximise expected tokens per second.

Everything is measured by the run itself, in units of one full-model step (c1):
- r_d(M): cost of one draft step with M layers skipped, relative to c1;
- r_v(k): cost of verifying k drafted tokens (k+1 positions), fitted as 1 + beta * k;
- alpha(M): per-token acceptance of the draft, counted from the rounds (Beta(1, 1) prior);
- the layer DP's cost, spread over LOI rounds (auto stretches LOI to keep it near 3% of time).
With per-token acceptance alpha, k drafted tokens yield E = (1 - alpha^(k+1)) / (1 - alpha)
tokens per round for k * r_d + r_v(k) units. If no (M, K) beats a plain step (1 token per
unit), the round is a plain full-model step: auto never drafts where drafting is slower.
An arm not yet tried gets an optimistic acceptance for its first few draft tokens, so each
is tried a little, and no more than that where it does not pay.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from .metrics import DEFAULT_SKIP_FRACTION


@dataclass
class Arm:
    M: int
    trials: int = 0          # draft tokens put to the test (accepted + first rejected)
    accepted: int = 0
    r_draft: float | None = None

    def alpha(self, bonus: float = 0.0) -> float:
        mean = (self.accepted + 1) / (self.trials + 2)
        return min(0.98, mean + bonus)


@dataclass
class FixedPolicy:
    """The settings as given: M, K and DET every round, layer choice every LOI rounds."""

    M: int
    K: int
    det: float
    choose_at_prefill: ClassVar[bool] = True   # the first skip set comes from the prompt's last token

    def __post_init__(self):
        self.arm = Arm(self.M)

    def plan(self) -> tuple[Arm, int, float]:
        return self.arm, self.K, 1.0

    def loi(self, base: int) -> int:
        return base

    def observe(self, arm: Arm | None, drafted: int, accepted: int, draft_steps: int, draft_s: float,
                verify_s: float) -> None:
        """Fixed settings learn nothing from a round."""

    def observe_dp(self, seconds: float) -> None:
        """Nor from the layer choice's cost."""


@dataclass
class AutoPolicy:
    det: ClassVar[float] = 0.0                   # K replaces DET: drafts run to the planned length
    choose_at_prefill: ClassVar[bool] = False   # layers are chosen only once drafting pays
    num_layers: int
    M_max: int
    K_max: int
    head_share: float                    # lm_head's share of a step's weights (draft cost floor)
    arms: list[Arm] = field(default_factory=list)
    c1: float | None = None              # seconds of one full single-token step (EMA)
    beta: float = 0.15                   # verify cost growth per drafted token (EMA, relative to c1)
    dp_s: float = 0.0
    prefill: tuple[float, int] | None = None   # (seconds, tokens): a first guess at beta
    margin: float = 1.05                 # draft only where it is predicted clearly faster
    explore: float = 0.25                # optimism added to an arm's acceptance while it is new
    explore_trials: int = 4

    def __post_init__(self):
        ms = sorted({max(1, round(f * self.num_layers)) for f in (0.2, DEFAULT_SKIP_FRACTION)} | {self.M_max})
        self.arms = [Arm(m) for m in ms if 1 <= m <= self.M_max]

    # ---- the model of costs --------------------------------------------------------------
    def r_draft(self, arm: Arm) -> float:
        if arm.r_draft is not None:
            return arm.r_draft
        return self.head_share + (1 - self.head_share) * (self.num_layers - arm.M) / self.num_layers

    def r_verify(self, k: int) -> float:
        return 1.0 + self.beta * k

    @staticmethod
    def expected_tokens(alpha: float, k: int) -> float:
        return (1 - alpha ** (k + 1)) / (1 - alpha)

    def loi(self, base: int) -> int:
        """Run the DP rarely enough that it stays near 3% of the time."""
        if not self.c1 or not self.dp_s:
            return base
        return max(base, math.ceil(self.dp_s / (0.03 * self.c1)))

    def plan(self) -> tuple[Arm | None, int, float]:
        """(arm, K, predicted speed in plain steps); arm None = a plain step."""
        if self.c1 is None or not self.arms:
            return None, 0, 1.0                      # first measure what a plain step costs
        best = (None, 0, self.margin)
        for arm in self.arms:
            bonus = self.explore if arm.trials < self.explore_trials else 0.0
            alpha = arm.alpha(bonus)
            rd = self.r_draft(arm)
            for k in range(1, self.K_max + 1):
                speed = self.expected_tokens(alpha, k) / (k * rd + self.r_verify(k))
                if speed > best[2]:
                    best = (arm, k, speed)
        return best if best[0] is not None else (None, 0, 1.0)

    # ---- what a round tells ----------------------------------------------------------------
    def observe_plain(self, seconds: float) -> None:
        if self.c1 is None and self.prefill and self.prefill[1] > 1:
            # the prompt's pass prices extra positions: prefill(n) ~ c1 * (1 + beta * (n - 1))
            pre_s, n = self.prefill
            self.beta = min(1.0, max(0.02, (pre_s / seconds - 1.0) / (n - 1)))
        self.c1 = seconds if self.c1 is None else 0.8 * self.c1 + 0.2 * seconds

    def observe(self, arm: Arm | None, drafted: int, accepted: int, draft_steps: int, draft_s: float,
                verify_s: float) -> None:
        """What one round cost and how many drafts survived (arm None: a plain step)."""
        if arm is None:
            self.observe_plain(verify_s)
            return
        arm.accepted += accepted
        arm.trials += accepted + (1 if accepted < drafted else 0)
        if self.c1 and draft_steps:
            r = draft_s / draft_steps / self.c1
            arm.r_draft = r if arm.r_draft is None else 0.7 * arm.r_draft + 0.3 * r
        if self.c1 and drafted:
            b = max(0.0, (verify_s / self.c1 - 1.0) / drafted)
            self.beta = 0.7 * self.beta + 0.3 * b

    def observe_dp(self, seconds: float) -> None:
        self.dp_s = seconds if not self.dp_s else 0.7 * self.dp_s + 0.3 * seconds


def head_share(model) -> float:
    """lm_head parameters / (lm_head + decoder layers): the part of a step no skip removes."""
    head = model.lm_head.weight.numel()
    layers = sum(p.numel() for p in model.model.layers.parameters())
    return head / (head + layers)

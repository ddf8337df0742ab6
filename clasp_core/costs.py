"""When does CLaSp pay? The cost model of one round, in units of one full-model step.

A round drafts k tokens (each draft step costs r_d of a full step), verifies them in one pass
(r_v(k) full steps) and, every LOI rounds, re-runs the layer DP (dp full steps). It yields τ tokens,
where plain decoding yields one token per full step, so

    speedup = τ / (k·r_d + r_v(k) + dp / LOI)

and drafting breaks even at τ = k·r_d + r_v(k) + dp/LOI. ``run_costs`` reads every term from a run's
own measurements; ``projection`` fills them in for a paper-scale model from a memory-bound estimate
(labelled as such: nothing about those shapes is measured here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median

from .metrics import DEFAULT_SKIP_FRACTION
from .trace import LayerChoice, Round


@dataclass
class Costs:
    step_s: float          # seconds of one full-model step (c1)
    k: float               # mean draft steps per drafting round (k̄)
    r_draft: float         # one draft step / one full step
    r_verify: float        # verifying k̄ drafts (k̄ + 1 positions) / one full step
    dp: float              # one layer-DP run / one full step
    loi: float             # drafting rounds per DP run
    tau: float             # tokens per drafting round

    @property
    def draft_verify(self) -> float:
        return self.k * self.r_draft + self.r_verify

    @property
    def round_cost(self) -> float:
        """Full-step units one round costs."""
        return self.draft_verify + (self.dp / self.loi if self.loi else 0.0)

    @property
    def speedup(self) -> float:
        return self.tau / self.round_cost if self.round_cost > 0 else 0.0

    @property
    def break_even_tau(self) -> float:
        return self.round_cost

    @property
    def loi_to_win(self) -> float:
        """The smallest LOI at which this τ would beat plain decoding (inf: no LOI is enough)."""
        spare = self.tau - self.draft_verify
        return self.dp / spare if spare > 0 else math.inf


def draft_steps(r: Round) -> int:
    """Draft forward passes a round ran: its drafts, plus the one whose guess fell below DET.
    A copied draft (prompt lookup) runs none: it costs only its verification."""
    if getattr(r, "lookup", None):
        return 0
    n = len(r.drafted)
    if r.k_max is None:                       # an older trace: a round with a skip set but no drafts
        return n or int(bool(r.skip) and r.draft_s > 0)    # ran one step below DET
    # fewer than K drafts: the last step's guess fell below DET (or, once a run, the draft wrote EOS)
    return n + 1 if n < r.k_max and r.draft_s > 0 else n


def run_costs(rounds: list[Round], choices: list[LayerChoice], step_s: float) -> Costs | None:
    """The cost model's terms measured in a CLaSp run; ``step_s``: one plain step, e.g. from vanilla."""
    drafting = [r for r in rounds if draft_steps(r) > 0 or getattr(r, "lookup", None)]
    if not drafting or step_s <= 0:
        return None
    steps = sum(draft_steps(r) for r in drafting)       # copied rounds add none: k̄ averages them in as free
    dp_runs = [c.seconds for c in choices if c.D]
    return Costs(step_s=step_s,
                 k=steps / len(drafting),
                 r_draft=sum(r.draft_s for r in drafting if draft_steps(r)) / steps / step_s if steps else 0.0,
                 r_verify=sum(r.verify_s for r in drafting) / len(drafting) / step_s,
                 dp=(sum(dp_runs) / len(dp_runs) / step_s) if dp_runs else 0.0,
                 loi=len(drafting) / len(dp_runs) if dp_runs else 0.0,
                 tau=sum(len(r.emitted) for r in drafting) / len(drafting))


def plain_step_s(step_seconds: list[float]) -> float:
    """One full-model step: the median of a vanilla run's steps (robust to the first, slower ones)."""
    return median(step_seconds) if step_seconds else 0.0


# ---- paper-scale projections ------------------------------------------------------------------
@dataclass(frozen=True)
class PaperModel:
    name: str
    layers: int
    head_share: float          # lm_head weights / (lm_head + decoder layers): the part no skip removes
    tau: tuple[float, float]   # the paper's T=0 τ range (Table 1)
    speedup: float             # the paper's measured T=0 speedup over vanilla (Table 1, Spec-Bench, A800)


# arXiv 2505.24196, Table 1 (T=0). head_share from the public configs: vocab 128256 x hidden / params.
PAPER_MODELS = (
    PaperModel("LLaMA-3-8B", 32, 128256 * 4096 / 8.03e9, (3.68, 6.22), 1.24),
    PaperModel("LLaMA-3-70B", 80, 128256 * 8192 / 70.6e9, (4.05, 7.19), 1.67),
)
VERIFY_SLOPE_GPU = 0.02        # assumed: verifying k more tokens costs 2% of a step each (memory-bound)


def projection(model: PaperModel, tau: float, m_frac: float = DEFAULT_SKIP_FRACTION, loi: float = 1.0) -> Costs:
    """Predicted round costs at batch 1 on a GPU, where a step is bound by reading the weights.

    A draft step reads the lm_head and the L-M kept layers; verifying k̄ drafts reads the weights
    once (plus VERIFY_SLOPE_GPU per token); the DP reads every layer once (about one step). k̄ is
    taken as τ (drafts mostly accepted; DET stops before the rejections). An estimate, not a measurement.
    """
    L = model.layers
    M = round(m_frac * L)
    r_draft = model.head_share + (1 - model.head_share) * (L - M) / L
    k = tau
    return Costs(step_s=0.0, k=k, r_draft=r_draft, r_verify=1 + VERIFY_SLOPE_GPU * k, dp=1.0, loi=loi, tau=tau)

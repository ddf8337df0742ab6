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

from .metrics import DEFAULT_SKIP_FRACTION, tau_drafting
from .trace import LayerChoice, Round


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens one round yields when each of k drafts is accepted with probability alpha (prefix rule)."""
    return (1 - alpha ** (k + 1)) / (1 - alpha) if alpha < 1 else k + 1.0


def draft_step_estimate(head_share: float, num_layers: int, num_skip: int) -> float:
    """A draft step before any is measured, in full steps: it reads the lm_head and the L - M kept layers."""
    return head_share + (1 - head_share) * (num_layers - num_skip) / num_layers


def verify_cost(slope: float, k: int) -> float:
    """Verifying k drafts (k + 1 positions) in full steps: one step plus ``slope`` per extra position."""
    return 1.0 + slope * k


@dataclass
class Costs:
    step_s: float          # seconds of one full-model step (c1)
    k: float               # mean draft steps per drafting round (k̄)
    r_draft: float         # one draft step / one full step
    r_verify: float        # verifying k̄ drafts (k̄ + 1 positions) / one full step
    dp: float              # one layer-DP run / one full step
    loi: float             # drafting rounds per DP run
    tau: float             # τ over drafting rounds: tokens per round that ran a draft step (metrics.tau_drafting)

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
    """Draft forward passes a round ran (defined once, on the trace type: ``Round.draft_steps``)."""
    return r.draft_steps


OUTLIER = 3.0          # a round slower than this many times the median of its kind is an outlier


def outlier_rounds(rounds: list[Round]) -> dict[int, float]:
    """{Round.index: times the median} for rounds far slower than the others of their kind (plain steps
    or drafting rounds of the same number of drafts): warm-up steps, a page render, a background job.
    The cost model leaves them out and the round table marks them."""
    groups: dict[tuple, list[Round]] = {}
    for r in rounds:
        groups.setdefault((r.drafting, r.copied, len(r.drafted)), []).append(r)
    out = {}
    for group in groups.values():
        if len(group) < 3:
            continue
        mid = median(r.draft_s + r.verify_s for r in group)
        for r in group:
            if mid > 0 and r.draft_s + r.verify_s > OUTLIER * mid:
                out[r.index] = (r.draft_s + r.verify_s) / mid
    return out


def run_costs(rounds: list[Round], choices: list[LayerChoice], step_s: float) -> Costs | None:
    """The cost model's terms measured in a CLaSp run; ``step_s``: one plain step, e.g. from vanilla.

    Outlier rounds (``outlier_rounds``) are left out of every term."""
    slow = outlier_rounds(rounds)
    drafting = [r for r in rounds if r.drafting and r.index not in slow]
    if not drafting or step_s <= 0:
        return None
    steps = sum(r.draft_steps for r in drafting)
    dp_runs = [c.seconds for c in choices if c.D]
    return Costs(step_s=step_s,
                 k=steps / len(drafting),
                 r_draft=sum(r.draft_s for r in drafting if draft_steps(r)) / steps / step_s if steps else 0.0,
                 r_verify=sum(r.verify_s for r in drafting) / len(drafting) / step_s,
                 dp=(sum(dp_runs) / len(dp_runs) / step_s) if dp_runs else 0.0,
                 loi=len(drafting) / len(dp_runs) if dp_runs else 0.0,
                 tau=tau_drafting(drafting))


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
    r_draft = draft_step_estimate(model.head_share, L, round(m_frac * L))
    k = tau
    return Costs(step_s=0.0, k=k, r_draft=r_draft, r_verify=verify_cost(VERIFY_SLOPE_GPU, k), dp=1.0, loi=loi,
                 tau=tau)


@dataclass(frozen=True)
class ShapeCosts:
    """A decode shape's round costs measured on a GPU, in full steps: BENCHMARKS.md, "GPU: one NVIDIA H200",
    shape study (fp16, random weights, 512 tokens of context, per-layer CUDA graphs for the steps)."""
    shape: str
    r_draft: float            # one draft step with M = 0.45 L skipped
    r_verify: float           # one verification of K + 1 = 9 tokens
    dp: float                 # one run of the layer DP (eager layer calls: launch-bound)


# The paper's models by the measured shape closest to them: the same width and depth for LLaMA-3-8B; for
# LLaMA-3-70B the same depth (80 layers) at 18.5B, the largest shape measured.
H200_SHAPES = {
    "LLaMA-3-8B": ShapeCosts("llama3-8b (8.03B, L = 32)", r_draft=0.60, r_verify=1.19, dp=5.6),
    "LLaMA-3-70B": ShapeCosts("deep-80 (18.5B, L = 80)", r_draft=0.56, r_verify=1.10, dp=5.8),
}


def measured_projection(shape: ShapeCosts, tau: float, loi: float = 1.0) -> Costs:
    """The cost model with a measured shape's costs and a given τ (k̄ taken as τ, as in ``projection``):
    the costs are measured, the τ is not, so the speedup is still a projection."""
    return Costs(step_s=0.0, k=tau, r_draft=shape.r_draft, r_verify=shape.r_verify, dp=shape.dp, loi=loi, tau=tau)

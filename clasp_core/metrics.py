"""Numbers derived from a run, defined once: every module and view reads them from here."""
from __future__ import annotations

import torch

DEFAULT_SKIP_FRACTION = 0.45        # the default M as a share of L (the paper finds 40-60% of L best)


def default_num_skip(num_layers: int) -> int:
    """M for an L-layer model when none is given: about 45% of the layers, at most L - 1."""
    return max(0, min(num_layers - 1, round(DEFAULT_SKIP_FRACTION * num_layers)))


def tau(new_tokens: int, rounds: int, runs: int = 1) -> float:
    """τ: mean tokens emitted per round, over all rounds (accepted drafts + the full model's own token).

    Plain full-model steps count as rounds of one token; ``tau_drafting`` is the other τ, over the
    rounds that drafted only. The page names them apart ("τ" and "τ over drafting rounds").

    The first token of each run comes from the prefill, not from a round, so it is not
    counted; pooled over several runs pass the summed tokens and rounds and the run count.
    """
    return (new_tokens - runs) / rounds if rounds else 0.0


def tau_drafting(rounds) -> float:
    """τ over drafting rounds: mean tokens emitted per round that ran a draft step (``Round.drafting``).

    The cost model's τ: it prices a drafting round, so plain full-model steps (one token each) are
    left out. It is never below ``tau`` of the same run, and equal when every round drafted."""
    drafting = [r for r in rounds if r.drafting]
    return sum(len(r.emitted) for r in drafting) / len(drafting) if drafting else 0.0


def speedup(tokens_per_s: float, baseline_tokens_per_s: float) -> float | None:
    """How many times faster than the baseline (None when the baseline has no speed)."""
    return tokens_per_s / baseline_tokens_per_s if baseline_tokens_per_s else None


def acceptance_rate(accepted: int, drafted: int) -> float:
    """Share of drafted tokens the full model accepted (0 when nothing was drafted)."""
    return accepted / drafted if drafted else 0.0


def dtype_name(dtype: torch.dtype | str) -> str:
    """'float32' for torch.float32 (or its string)."""
    return str(dtype).replace("torch.", "")

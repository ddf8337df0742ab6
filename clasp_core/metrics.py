"""Numbers derived from a run, defined once: every module and view reads them from here."""
from __future__ import annotations

import torch

DEFAULT_SKIP_FRACTION = 0.45        # the default M as a share of L (the paper finds 40-60% of L best)


def default_num_skip(num_layers: int) -> int:
    """M for an L-layer model when none is given: about 45% of the layers, at most L - 1."""
    return max(0, min(num_layers - 1, round(DEFAULT_SKIP_FRACTION * num_layers)))


def tau(new_tokens: int, rounds: int, runs: int = 1) -> float:
    """Mean tokens emitted per round (accepted drafts + the full model's own token).

    The first token of each run comes from the prefill, not from a round, so it is not
    counted; pooled over several runs pass the summed tokens and rounds and the run count.
    """
    return (new_tokens - runs) / rounds if rounds else 0.0


def acceptance_rate(accepted: int, drafted: int) -> float:
    """Share of drafted tokens the full model accepted (0 when nothing was drafted)."""
    return accepted / drafted if drafted else 0.0


def dtype_name(dtype: torch.dtype | str) -> str:
    """'float32' for torch.float32 (or its string)."""
    return str(dtype).replace("torch.", "")

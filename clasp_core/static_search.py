"""The `static` layer choice: one skip set per (model, M), found offline on calibration prompts.

Placeholder with the final API; the search itself lands next.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .model import LoadedModel


@dataclass
class StaticSet:
    skip: list[int]          # the M layers to skip, sorted
    M: int
    score: float             # the search's objective for this set (e.g. calibration acceptance)
    seconds: float           # what finding it cost (0 when read from the cache)
    how: str                 # one line: how it was found
    cached: bool = False


def static_skip_set(lm: LoadedModel, M: int, *, progress: Callable[[str], None] | None = None) -> StaticSet:
    """The offline skip set for this model and M (searched once, then read from a JSON cache)."""
    L = lm.num_layers
    if not 0 <= M < L:
        raise ValueError(f"M must be in [0, {L - 1}] for a {L}-layer model, got {M}")
    start = (L - M) // 2
    return StaticSet(skip=list(range(start, start + M)), M=M, score=float("nan"), seconds=0.0,
                     how="placeholder: the middle M layers")

"""Pooled numbers over result rows (JSON lines): what the tables and the figures show."""
from __future__ import annotations

from dataclasses import dataclass

from ..metrics import acceptance_rate, tau

MT_BENCH = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}


def task_of(category: str) -> str:
    """Spec-Bench's task of a question category (MT-Bench's eight categories are one task)."""
    return "mt_bench" if category in MT_BENCH else category


@dataclass
class Pooled:
    n: int
    tokens_per_s: float
    tau: float | None           # tokens emitted per round after the prefill's (None: the method never drafts)
    accept: float | None        # accepted / drafted
    dp_share: float | None      # the layer choice's share of the wall time


def pooled(rows: list[dict]) -> Pooled:
    """Totals over runs, then ratios (a long answer weighs more than a short one)."""
    wall = sum(r["wall_s"] for r in rows)
    tokens = sum(r["new_tokens"] for r in rows)
    drafts = [r for r in rows if "rounds" in r]
    rounds = sum(r["rounds"] for r in drafts)
    drafted = sum(r["drafted"] for r in drafts)
    return Pooled(n=len(rows), tokens_per_s=tokens / wall if wall else 0.0,
                  tau=tau(sum(r["new_tokens"] for r in drafts), rounds, runs=len(drafts)) if rounds else None,
                  accept=acceptance_rate(sum(r["accepted"] for r in drafts), drafted) if drafted else None,
                  dp_share=sum(r["dp_s"] for r in drafts) / wall if drafts and wall else None)

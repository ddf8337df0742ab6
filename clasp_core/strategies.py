"""Ways of choosing the layers the draft skips. The decoding loop is the same for all of them.

A strategy answers two questions: which M layers to skip now (``choose``), and whether to
choose again after a round (``due``). Only the in-context DP looks at the run's hidden states.

- ``clasp``      the layer DP (Algorithm 1) on the last accepted token, re-run every LOI rounds;
- ``clasp-once`` the same DP once, on the prompt's last token, never refreshed (the LOI ablation);
- ``static``     one set per (model, M) found offline on calibration prompts (static_search.py);
- ``early-exit`` the last M layers: the draft is the first L - M layers, the final norm and the head;
- ``random``     M layers drawn from the run's seed, with their own generator (sampling is untouched).

Two draft sources copy instead (lookup.py): ``lookup`` drafts only what an n-gram of the context
predicts (a round without a match is a plain step), ``clasp+lookup`` copies where an n-gram
matches and drafts with the layer DP's set elsewhere. They sit here so that the app, the bench and
the engine name every draft source alike.

Every strategy is lossless: the full model verifies whatever the draft proposes.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch

from .layer_dp import DPResult, backtrack, choose_skip_set

STRATEGIES = ("clasp", "clasp-once", "static", "early-exit", "random", "lookup", "clasp+lookup")
DP_STRATEGIES = ("clasp", "clasp-once", "clasp+lookup")
LOOKUP_STRATEGIES = ("lookup", "clasp+lookup")


@dataclass
class Choice:
    """A skip set (exactly M layers) and, from the DP, the table every smaller M backtracks from."""

    strategy: str
    skip: list[int]
    seconds: float                  # time the run spent choosing (an offline search is not in it)
    dp: DPResult | None = None

    def for_m(self, m: int) -> tuple[list[int], list[list[int]]]:
        """(skip set, DP path) for m <= M layers; without a DP table only m = M has a set."""
        if self.dp is not None:
            return backtrack(self.dp.flags, len(self.dp.flags) - 1, m)
        if m != len(self.skip):
            raise ValueError(f"the {self.strategy} strategy chose {len(self.skip)} layers, not {m}")
        return self.skip, []

    def skip_for(self, m: int) -> list[int]:
        return self.for_m(m)[0]


class LayerDP:
    """``clasp``: the in-context DP, on the newest verified token, every LOI rounds."""

    name = "clasp"
    uses_dp = True
    drafts = True                   # the skipped-layer draft runs (False: copied drafts only)
    lookup = False                  # copy from the context where an n-gram matches

    def prepare(self, lm, M: int) -> dict:
        return {}

    def choose(self, runner, xs: torch.Tensor, p: int, M: int) -> Choice:
        res = choose_skip_set(runner, xs, p, M)
        return Choice(self.name, res.skip, res.seconds, res)

    def due(self, rounds_since: int, loi: int) -> bool:
        return rounds_since >= loi


class LayerDPOnce(LayerDP):
    """``clasp-once``: the DP's first choice is kept for the whole run."""

    name = "clasp-once"

    def due(self, rounds_since: int, loi: int) -> bool:
        return False


class LayerDPLookup(LayerDP):
    """``clasp+lookup``: copy where the context's n-gram matches, else draft with the DP's set."""

    name = "clasp+lookup"
    lookup = True


class FixedLayers:
    """A set that does not depend on the context: chosen before the first draft, never again."""

    name = ""
    uses_dp = False
    drafts = True
    lookup = False

    def prepare(self, lm, M: int) -> dict:
        """Work done before the run's clocks start; returns what to report in Prefill.params."""
        self.L = lm.num_layers
        return {}

    def layers(self, M: int) -> list[int]:
        raise NotImplementedError

    def choose(self, runner, xs, p: int, M: int) -> Choice:
        t0 = time.perf_counter()
        skip = sorted(self.layers(M))
        return Choice(self.name, skip, time.perf_counter() - t0)

    def due(self, rounds_since: int, loi: int) -> bool:
        return False


class EarlyExit(FixedLayers):
    """``early-exit``: skip the last M layers (LayerSkip's draft, without its training)."""

    name = "early-exit"

    def layers(self, M: int) -> list[int]:
        return list(range(self.L - M, self.L))


class RandomLayers(FixedLayers):
    """``random``: M layers drawn with random.Random(seed), so the sampling generator is not touched."""

    name = "random"

    def __init__(self, seed: int):
        self.seed = seed

    def layers(self, M: int) -> list[int]:
        return random.Random(self.seed).sample(range(self.L), M)


class StaticLayers(FixedLayers):
    """``static``: the offline set of static_search.py (searched once per model and M, then cached)."""

    name = "static"

    def prepare(self, lm, M: int) -> dict:
        from .static_search import static_skip_set      # imported here: only this strategy needs it

        super().prepare(lm, M)
        found = static_skip_set(lm, M)
        self.skip = list(found.skip)
        return dict(static_search_s=found.seconds, static_how=found.how, static_cached=found.cached,
                    static_score=found.score if math.isfinite(found.score) else None)

    def layers(self, M: int) -> list[int]:
        return self.skip


class LookupOnly(FixedLayers):
    """``lookup``: no layers are chosen and none skipped; a round without a match is a plain step."""

    name = "lookup"
    drafts = False
    lookup = True

    def layers(self, M: int) -> list[int]:
        return []


def make_strategy(name: str, seed: int = 0):
    """The strategy object for a name of STRATEGIES; raises ValueError on anything else."""
    makers = {"clasp": LayerDP, "clasp-once": LayerDPOnce, "static": StaticLayers, "early-exit": EarlyExit,
              "random": lambda: RandomLayers(seed), "clasp+lookup": LayerDPLookup,
              "lookup": LookupOnly}
    if name not in makers:
        raise ValueError(f"unknown layer-choice strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    return makers[name]()

"""Ways of choosing the layers the draft skips. The decoding loop is the same for all of them.

A strategy answers two questions: which M layers to skip now (``choose``), and whether to
choose again after a round (``due``). Only the in-context DP looks at the run's hidden states.

- ``clasp``      the layer DP (Algorithm 1) on the last accepted token, re-run every LOI rounds;
- ``clasp-once`` the same DP once, on the prompt's last token, never refreshed (the LOI ablation);
- ``clasp-fused`` the same DP inside the next verification's layer calls, its set used one round later;
- ``static``     one set per (model, M) found offline on calibration prompts (static_search.py);
- ``early-exit`` the last M layers: the draft is the first L - M layers, the final norm and the head;
- ``random``     M layers drawn from the run's seed, with their own generator (sampling is untouched).

Two draft sources copy instead (lookup.py): ``lookup`` drafts only what an n-gram of the context
predicts (a round without a match is a plain step), ``clasp+lookup`` copies where an n-gram
matches and drafts with the layer DP's set elsewhere. They sit here so that the app, the bench and
the engine name every draft source alike.

One registry holds them all: each class carries its name, its label and help for the page, and
what it needs from the loop (a DP table, a layer draft, the context's n-grams), and ``@register``
adds it. Every list of names (the engine's check, the bench's methods, the page's selector, where
auto may run) is read from the registry when it is used, so a new draft source is one class here.

Every strategy is lossless: the full model verifies whatever the draft proposes.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch

from . import dp_static
from .layer_dp import DPResult, backtrack

if TYPE_CHECKING:
    from .model import LoadedModel
    from .runner import Runner


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


class Strategy(Protocol):
    """What the decoding loop asks of a draft source, built as ``cls(seed)`` once per run. The class
    attributes are read before any instance exists: by the registry's lists, the page's selector
    and the bench's methods."""

    name: ClassVar[str]             # GenConfig.strategy, the bench method and the selector's value
    label: ClassVar[str]            # the selector's text; the part before a colon names it in verdicts
    help: ClassVar[str]             # one sentence (markdown) for the page's help on draft sources
    uses_dp: ClassVar[bool]         # builds the layer DP's table: auto may pick any M <= num_skip from it
    drafts: ClassVar[bool]          # the skipped-layer draft runs (False: copied drafts or plain steps only)
    lookup: ClassVar[bool]          # copies from the context where an n-gram matches
    fused: ClassVar[bool]           # its DP rides the next verification's layer calls (the set drafts a round later)
    bench_auto: ClassVar[bool]      # the bench's method of this name runs with auto on

    def prepare(self, lm: LoadedModel, M: int) -> dict:
        """Work done before the run's clocks start; returns what to report in Prefill.setup."""

    def choose(self, runner: Runner, xs: torch.Tensor | None, p: int, M: int) -> Choice:
        """The M layers to skip, from the hidden states ``xs`` of the token at position ``p``
        (None when the strategy does not use the DP)."""

    def due(self, rounds_since: int, loi: int) -> bool:
        """Whether to choose again after this round."""


REGISTRY: dict[str, type[Strategy]] = {}
# what register checks a class has: the protocol's attributes, then its methods
NEEDS = (*Strategy.__annotations__, *(k for k, v in vars(Strategy).items() if callable(v) and not k.startswith("_")))


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: add a draft source under its ``name`` (the order of registration is the
    order of every list). A clear TypeError for a class that lacks part of the protocol or
    reuses a name."""
    missing = [a for a in NEEDS if not hasattr(cls, a)]
    if missing:
        raise TypeError(f"strategy class {cls.__name__} lacks {', '.join(missing)}")
    if not isinstance(cls.name, str) or not cls.name:
        raise TypeError(f"strategy class {cls.__name__} has no name")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise TypeError(f"the strategy name {cls.name!r} is taken by {REGISTRY[cls.name].__name__}")
    REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a draft source (a test's throwaway one); every list drops it at once."""
    REGISTRY.pop(name, None)


def registered() -> list[type[Strategy]]:
    return list(REGISTRY.values())


class Names(Sequence):
    """A read-only tuple of names recomputed from ``make`` at each use: the module-level lists stay
    importable by name and still see a strategy registered after the import."""

    def __init__(self, make: Callable[[], Iterable[str]]):
        self._make = make

    def _names(self) -> tuple[str, ...]:
        return tuple(self._make())

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name) -> bool:
        return name in self._names()

    def __eq__(self, other) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return self._names() == tuple(other)
        return NotImplemented

    def __add__(self, other) -> tuple[str, ...]:
        return self._names() + tuple(other)

    def __radd__(self, other) -> tuple[str, ...]:
        return tuple(other) + self._names()

    __hash__ = None                 # it changes with the registry

    def __repr__(self) -> str:
        return repr(self._names())


STRATEGIES = Names(lambda: REGISTRY)
DP_STRATEGIES = Names(lambda: (s.name for s in registered() if s.uses_dp))
LOOKUP_STRATEGIES = Names(lambda: (s.name for s in registered() if s.lookup))


@register
class LayerDP:
    """``clasp``: the in-context DP, on the newest verified token, every LOI rounds."""

    name = "clasp"
    label = "CLaSp: the layer DP, re-run every LOI rounds"
    help = ("*CLaSp* re-runs the layer DP on the newest hidden states every LOI rounds, so the skip set follows "
            "the context.")
    uses_dp = True
    drafts = True
    lookup = False
    fused = False
    bench_auto = False              # the bench's "auto" method is this strategy with auto on

    def __init__(self, seed: int = 0):
        self.seed = seed

    def prepare(self, lm, M: int) -> dict:
        """On CUDA: capture the fixed-shape DP's graph before the clock starts (dp_static.py)."""
        spent = dp_static.prepare(lm.runner, M)
        return {"dp_capture_s": spent} if spent else {}

    def choose(self, runner, xs: torch.Tensor, p: int, M: int) -> Choice:
        res = dp_static.choose(runner, xs, p, M)
        return Choice(self.name, res.skip, res.seconds, res)

    def due(self, rounds_since: int, loi: int) -> bool:
        return rounds_since >= loi


@register
class LayerDPOnce(LayerDP):
    """``clasp-once``: the DP's first choice is kept for the whole run."""

    name = "clasp-once"
    label = "DP once, on the prompt's last token"
    short = "DP once"
    help = "*DP once* keeps the set the DP picked from the prompt (the paper's LOI ablation)."

    def due(self, rounds_since: int, loi: int) -> bool:
        return False


@register
class LayerDPFused(LayerDP):
    """``clasp-fused``: the DP of the newest verified token rides the next round's verification.

    Each layer runs the verification's rows and the DP's candidates in one call (dp_static.verify_with_dp),
    so the layer's weights are read once for both; the set drafts from the round after that verification,
    one round later than ``clasp``'s. Lossless like any set: the full model verifies. The first set (on
    the prompt's last token) has no verification to ride and runs the DP on its own."""

    name = "clasp-fused"
    label = "CLaSp fused: the layer DP inside the next verification pass"
    short = "CLaSp fused"
    help = ("*CLaSp fused* runs the layer DP inside the next verification (the same layer calls, one weight "
            "read), so the set is one round staler than CLaSp's but the DP costs only its extra rows.")
    fused = True


class FixedLayers:
    """A set that does not depend on the context: chosen before the first draft, never again."""

    name = ""                       # a base class: not registered
    uses_dp = False
    drafts = True
    lookup = False
    fused = False
    bench_auto = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def prepare(self, lm, M: int) -> dict:
        """Work done before the run's clocks start; returns what to report in Prefill.setup."""
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


@register
class StaticLayers(FixedLayers):
    """``static``: the offline set of static_search.py (searched once per model and M, then cached)."""

    name = "static"
    label = "static: one set per model and M, found offline"
    help = ("*Static* is the Self-SD idea: one set per model, searched offline on calibration prompts for draft "
            "agreement, then reused.")

    def prepare(self, lm, M: int) -> dict:
        from .static_search import static_skip_set  # imported here: only this strategy needs it

        super().prepare(lm, M)
        found = static_skip_set(lm, M)
        self.skip = list(found.skip)
        return dict(static_search_s=found.seconds, static_how=found.how, static_cached=found.cached,
                    static_score=found.score if math.isfinite(found.score) else None)

    def layers(self, M: int) -> list[int]:
        return self.skip


@register
class EarlyExit(FixedLayers):
    """``early-exit``: skip the last M layers (LayerSkip's draft, without its training)."""

    name = "early-exit"
    label = "early exit: skip the last M layers"
    help = "*Early exit* drafts with the first L − M layers (LayerSkip's draft, without its training)."

    def layers(self, M: int) -> list[int]:
        return list(range(self.L - M, self.L))


@register
class RandomLayers(FixedLayers):
    """``random``: M layers drawn with random.Random(seed), so the sampling generator is not touched."""

    name = "random"
    label = "random: M layers drawn from the seed"
    help = "*Random* is the floor."

    def layers(self, M: int) -> list[int]:
        return random.Random(self.seed).sample(range(self.L), M)


@register
class LookupOnly(FixedLayers):
    """``lookup``: no layers are chosen and none skipped; a round without a match is a plain step."""

    name = "lookup"
    label = "prompt lookup: copy what followed the last n-gram in the context"
    help = ("*Prompt lookup* runs no draft model: when the context's last 3, 2 or 1 tokens appeared before, it "
            "proposes what followed them there, for free (the round costs only the check); where nothing matches "
            "the round is a plain step.")
    drafts = False
    lookup = True

    def layers(self, M: int) -> list[int]:
        return []


@register
class LayerDPLookup(LayerDP):
    """``clasp+lookup``: copy where the context's n-gram matches, else draft with the DP's set."""

    name = "clasp+lookup"
    label = "CLaSp + lookup: copy where an n-gram matches, else skip layers"
    help = ("*CLaSp + lookup* copies where an n-gram matches and drafts with CLaSp's skipped layers elsewhere; "
            "with auto on it takes plain steps where neither pays.")
    lookup = True
    bench_auto = True               # copies where they match, else auto's layer draft or a plain step


def short_name(name: str) -> str:
    """What the page calls a draft source in a sentence or a column head: the class's ``short`` where it has
    one, else its label up to the colon ("CLaSp", "prompt lookup", "CLaSp + lookup"); an unknown name as is."""
    cls = REGISTRY.get(name)
    if cls is None:
        return name
    return getattr(cls, "short", None) or cls.label.split(":")[0]


def make_strategy(name: str, seed: int = 0) -> Strategy:
    """The strategy object for a registered name, built from the run's seed (only ``random`` uses it);
    raises ValueError on anything else."""
    if name not in REGISTRY:
        raise ValueError(f"unknown layer-choice strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    return REGISTRY[name](seed)

"""The `static` layer choice: one skip set per (model, M), found offline on calibration prompts.

The Self-SD analogue: Self-SD (Zhang et al., 2024) searches the skipped layers once, offline, for
the draft's acceptance (by Bayesian optimisation); this is a greedy search on the same objective,
cheap enough for a CPU.

1. The full model continues the calibration prompts below (not the benchmark's) greedily.
2. A skip set is scored by teacher-forced draft agreement: at every continuation position the
   draft (the model without those layers) predicts the next token from the full model's KV cache
   of everything before it, as in the first draft step of a CLaSp round, and the score is the
   fraction of positions where its top token is the full model's (ties: the mean log-probability
   the draft gives that token). All positions of all prompts are scored in one batch.
3. Greedy: from no skipped layer, add M times the layer whose skipping keeps the score highest,
   lazily (a layer's last score bounds its next one, so few are re-scored after the first round).
   The states entering each layer under the current set are kept, so trying layer l reruns only
   the layers after it.

The greedy sets are nested (the set for M is the first M layers the search added), so one search
saves every smaller M too. Results are saved as JSON under ``paths.cache_dir()/static``
(``CLASP_CACHE`` moves it) and reused; sets searched ahead for the embedded default model ship in
``static_sets/`` beside this file (read-only), so its ``static`` runs start at once.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .model import LoadedModel
from .paths import cache_dir
from .prompt import encode_prompt
from .runner import Runner

CALIBRATION = (
    "Write a Python function that checks whether a string is a palindrome.",
    "A shop sells pens at 3 dollars each. Tom buys 7 pens and pays with a 50 dollar note. "
    "How much change does he get? Think step by step.",
    "Translate into English: Der Zug nach Berlin fährt jeden Morgen um sieben Uhr ab.",
    "Summarise in two sentences: Honeybees pollinate a third of the crops people eat. Their "
    "numbers have fallen in many countries, and farmers now rent hives to pollinate orchards.",
    "Who wrote the novel Pride and Prejudice, and when was it published?",
    "Write a short poem about a lighthouse in a storm.",
    "Give three tips for someone learning to cook at home.",
    "Explain to a beginner what a hash table is and why lookups are fast.",
)
TOKENS = 8           # greedy continuation tokens per prompt: the scored positions
VERSION = 1          # bump when the search changes: sets cached by an older search are not reused
SHIPPED = Path(__file__).parent / "static_sets"     # searched ahead of time (embedded default model)


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
    if isinstance(M, bool) or not isinstance(M, int) or not 0 <= M < L:
        raise ValueError(f"M must be an integer in [0, {L - 1}] for a {L}-layer model, got {M!r}")
    if M == 0:
        return StaticSet(skip=[], M=0, score=1.0, seconds=0.0, how="M = 0: no layer is skipped")
    path = cache_path(lm, M)
    for saved_at in (path, SHIPPED / path.name):
        if saved_at.is_file():
            saved = json.loads(saved_at.read_text())
            return StaticSet(skip=saved["skip"], M=M, score=saved["score"], seconds=0.0, how=saved["how"],
                             cached=True)
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    found = {}

    def save(m: int, skip: list[int], score: float, scored: int) -> None:
        """The greedy set after m layers: the answer for M = m as well (the sets are nested)."""
        seconds = time.perf_counter() - t0
        how = (f"lazy greedy search on teacher-forced draft agreement, {len(CALIBRATION)} calibration prompts "
               f"({TOKENS * len(CALIBRATION)} positions), {scored} scored sets, {seconds:.0f} s on {lm.device}")
        found[m] = StaticSet(skip=skip, M=m, score=score, seconds=seconds, how=how)
        at = cache_path(lm, m)
        at.parent.mkdir(parents=True, exist_ok=True)
        tmp = at.with_name(f"{at.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(found[m]), indent=1))
        tmp.replace(at)

    with torch.inference_mode():
        greedy(Calibration(lm), M, say, save)
    return found[M]


def cache_path(lm: LoadedModel, M: int) -> Path:
    """One JSON per (model, M), keyed by the model's name and shape and by the search itself."""
    c = lm.config
    shape = [getattr(c, k, None) for k in ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size",
                                            "num_attention_heads", "num_key_value_heads", "vocab_size")]
    key = hashlib.sha256(json.dumps([lm.name, shape, VERSION, TOKENS, CALIBRATION]).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", lm.name).strip("-")[:40]
    return cache_dir() / "static" / f"{slug}-{key}-M{M}.json"


class Calibration:
    """The calibration sequences in one KV cache (full model) and the draft rows scored on them."""

    def __init__(self, lm: LoadedModel):
        self.r = r = Runner(lm.model, static=False)
        seqs = [continue_greedy(r, ids, set(lm.eos_ids)) for ids in calibration_ids(lm)]
        dev = r.device
        ids = torch.tensor([t for s, _ in seqs for t in s], device=dev)
        n = ids.numel()
        starts = torch.tensor([0] + [len(s) for s, _ in seqs], device=dev).cumsum(0)[:-1]
        first = torch.repeat_interleave(starts, torch.tensor([len(s) for s, _ in seqs], device=dev))
        # the rows: every position whose next token is a continuation token
        rows = torch.cat([torch.arange(s0 + p - 1, s0 + len(s) - 1, device=dev) for s0, (s, p) in
                          zip(starts.tolist(), seqs)])
        self.targets = ids[rows + 1]
        R = rows.numel()
        self.end = n + R
        r.allocate(self.end)
        cols = torch.arange(self.end, device=dev)
        # the full model over all sequences at once, each causal and blind to the others
        pos = cols[:n]
        x = r.embed(ids)[None]
        cos, sin = r.rotary(x, pos[None])
        mask = (pos[None, :] <= pos[:, None]) & (first[None, :] == first[:, None])
        r.run_layers(x, lambda i, x: r.layer_step(i, x, cos, sin, pos, mask, n))   # it leaves the K/V behind
        # a draft row attends to its sequence's full-model K/V before it and to its own K/V, which it
        # writes to a scratch slot past the sequences (n + its row index)
        self.at = cols[n:]
        self.x0 = r.embed(ids[rows])[None]
        self.cos, self.sin = r.rotary(self.x0, rows[None])
        self.mask = (((cols[None, :] >= first[rows][:, None]) & (cols[None, :] < rows[:, None]))
                     | (cols[None, :] == self.at[:, None]))

    def step(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.r.layer_step(i, x, self.cos, self.sin, self.at, self.mask, self.end)

    def states(self, skip) -> list[torch.Tensor]:
        """The draft rows entering each layer 0..L-1 under ``skip``, then leaving the last."""
        xs = [self.x0]
        self.r.run_layers(self.x0, self.step, skip, record=xs.append)
        return xs

    def score(self, x: torch.Tensor) -> tuple[float, float]:
        """(agreement with the full model's tokens, mean log-probability of them) of final states x."""
        logits = self.r.head(self.r.norm(x))[0].float()
        agree = (logits.argmax(-1) == self.targets).float().mean().item()
        return agree, logits.log_softmax(-1).gather(1, self.targets[:, None]).mean().item()


def greedy(cal: Calibration, M: int, say: Callable[[str], None],
           save: Callable[[int, list[int], float, int], None] | None = None) -> tuple[list[int], float, int]:
    """Add M layers one at a time, each the one whose skipping keeps the score highest.

    Lazily (the lazy greedy of submodular maximisation): a layer's last score bounds its score
    after more layers are skipped, so each round re-scores candidates best bound first and stops
    when the best is fresh; the first round scores every layer. ``save(m, set, agreement, scored)``
    gets the set after each added layer. Returns (set, agreement, sets scored)."""
    L = cal.r.num_layers
    skip: set[int] = set()
    bound = {l: (math.inf, math.inf) for l in range(L)}
    scored = 0
    for m in range(M):
        xs = cal.states(skip)
        fresh = set()
        while (l := max(bound, key=bound.get)) not in fresh:
            x = cal.r.run_layers(xs[l], cal.step, skip, start=l + 1)   # from what enters layer l, now skipped
            bound[l] = cal.score(x)
            fresh.add(l)
            scored += 1
        skip.add(l)
        agreement = bound.pop(l)[0]
        say(f"static search: {m + 1}/{M} layers chosen, agreement {agreement:.2f}")
        if save is not None:
            save(m + 1, sorted(skip), agreement, scored)
    return sorted(skip), agreement, scored


def calibration_ids(lm: LoadedModel) -> list[list[int]]:
    """The calibration prompts as token ids (chat template where the tokenizer has one); a model
    without a tokenizer (a test's tiny random model) gets seeded random ids instead."""
    if lm.tokenizer is None:
        g = torch.Generator().manual_seed(0)
        V = lm.config.vocab_size
        return [torch.randint(3, V, (8 + 2 * j,), generator=g).tolist() for j in range(len(CALIBRATION))]
    return [encode_prompt(lm, p)[0] for p in CALIBRATION]


def continue_greedy(r: Runner, ids: list[int], eos: set[int]) -> tuple[list[int], int]:
    """(prompt + the full model's greedy continuation of up to TOKENS tokens, prompt length)."""
    r.allocate(len(ids) + TOKENS)
    seq = list(ids)
    logits = r.forward(torch.tensor(ids, device=r.device), 0, last_only=True)
    for _ in range(TOKENS):
        t = int(logits[-1].argmax())
        seq.append(t)
        if t in eos or len(seq) == len(ids) + TOKENS:
            break
        logits = r.forward(torch.tensor([t], device=r.device), len(seq) - 1, last_only=True)
    return seq, len(ids)

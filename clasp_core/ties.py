"""Tell a floating-point tie from a drafting error, when a greedy run parts from its reference.

Greedy CLaSp is exact arithmetic-wise: every emitted token is the full model's argmax. But the
full model verifies k + 1 positions in one block, while vanilla steps one token at a time, and
the two sum the same products in different orders. In float32 the difference is far below any
real gap between logits; in half precision it is not: bfloat16 keeps 8 significant bits, so at
logits of size 16-32 its step (one ulp) is 0.125, and two candidates that far apart or closer
may swap places. Both continuations are then valid greedy outputs, of the same model, rounded
differently. Anything else that makes two greedy runs part is a bug.

So the engine records, for every emitted token, the full model's two best candidates there
(``top_two``: ids and logits, argmax first), and ``classify`` reads them at the first position
where a run leaves its reference:

* **identical**: no position differs.
* **tie**: this run's token there is its own full model's top-1 (it decoded greedily), the
  reference's token is its runner-up, and the two logits are within ``tolerance``, and, where
  the reference's own top two are known, they say the same from the other side.
* **error**: anything else: the run emitted a token its full model did not rank first (e.g. a
  rejected draft slipped through), or the reference's token was clearly worse.

The tolerance is ``TIE_ULPS`` ulps of the larger top logit, in the run's dtype:
``TIE_ULPS * eps * 2**floor(log2 |logit|)``, with eps the dtype's machine epsilon (the spacing
of floats at 1.0). Each of the two logits is the end of a long chain of rounded operations
(30 layers of matmuls, norms and softmaxes for SmolLM2), so block and step can each land an ulp
or two from the exact value and their margins can move by the sum. Measured on bfloat16 CPU runs,
the ties sit at 0-1 ulp (0.000-0.125 at |logit| ~ 20, with the float32 margin 0.007-0.128); 4 ulps
(0.5 there) leaves room for deeper models while staying well below a gap the model means (a
token 0.5 logits behind holds ~40% of the probability of the best; a rejected draft is usually
several logits behind). In float32 the same rule gives ~8e-6: float32 runs must be identical, and are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

TIE_ULPS = 4
KINDS = ("identical", "tie", "error")


def machine_eps(dtype: torch.dtype | str) -> float:
    """The spacing of floats at 1.0 in ``dtype`` (bfloat16 2^-7, float16 2^-10, float32 2^-23)."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}")
    return float(torch.finfo(dtype).eps)


def ulp(x: float, dtype: torch.dtype | str) -> float:
    """The spacing of ``dtype``'s floats at magnitude |x| (its unit in the last place there)."""
    x = abs(x)
    if x == 0 or not math.isfinite(x):
        return machine_eps(dtype)
    return machine_eps(dtype) * 2.0 ** math.floor(math.log2(x))


def tolerance(dtype: torch.dtype | str, scale: float) -> float:
    """The widest top-2 margin still read as a rounding tie, for logits of size ``scale``."""
    return TIE_ULPS * ulp(scale, dtype)


def top_two(logits: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
    """Per row of ``logits`` (n, vocab): the ids [best, second] and their logits.

    The best is ``argmax`` (the token greedy decoding picks, also when two logits are equal)."""
    best = logits.argmax(-1)
    vals, ids = logits.topk(2, dim=-1)
    second = torch.where(ids[:, 0] == best, ids[:, 1], ids[:, 0])
    return (torch.stack([best, second], -1).tolist(), vals.float().tolist())


@dataclass
class Divergence:
    """How a run compares with its reference (see the module docstring)."""

    kind: str                            # identical | tie | error
    position: int | None = None          # first output index where the tokens differ
    token: int | None = None             # this run's token there
    reference: int | None = None         # the reference's token there
    margin: float | None = None          # this run's full-model top-1 minus top-2 logit there
    tolerance: float | None = None       # the widest margin read as a tie there
    reference_margin: float | None = None
    dtype: str = "float32"
    reason: str = ""                     # why, in a phrase

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first index where ``a`` and ``b`` differ (within their common length), else None."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def classify(tokens: list[int], tops: list, reference: list[int], dtype: torch.dtype | str,
             reference_tops: list | None = None) -> Divergence:
    """Classify ``tokens`` (with their per-token ``tops``: (ids, logits) pairs from ``top_two``)
    against ``reference`` (a greedy run of the same model and prompt: transformers ``generate``,
    or vanilla with ``reference_tops``). Runs of different lengths that agree where both have
    tokens (one was stopped early) are identical."""
    dt = str(dtype).replace("torch.", "")
    k = first_difference(tokens, reference)
    if k is None:
        return Divergence("identical", dtype=dt)
    mine, ref = tokens[k], reference[k]
    d = Divergence("error", k, mine, ref, dtype=dt)
    if k >= len(tops) or not tops[k]:
        d.reason = "no top-2 was recorded there"
        return d
    (best, second), (l1, l2) = tops[k]
    d.margin = l1 - l2
    d.tolerance = tolerance(dt, max(abs(l1), abs(l2)))
    ref_top = reference_tops[k] if reference_tops is not None and k < len(reference_tops) else None
    if ref_top:
        (rb, rs), (r1, r2) = ref_top
        d.reference_margin = r1 - r2
    if best != mine:
        d.reason = "the run emitted a token its full model did not rank first"
    elif second != ref:
        d.reason = "the reference's token is not the full model's runner-up"
    elif d.margin > d.tolerance:
        d.reason = "the full model's top two are further apart than rounding explains"
    elif ref_top and ((rb, rs) != (ref, mine) or d.reference_margin > d.tolerance):
        d.reason = "the reference's own logits there do not show a near-tie of these two tokens"
    else:
        d.kind, d.reason = "tie", "the full model's two best candidates are within rounding"
    return d


def run_tops(events) -> tuple[list[int], list]:
    """(output ids, per-token tops) of one run's events (Prefill, Round, Step); empty tops where the
    trace does not hold them (sampled runs, older traces)."""
    from .trace import Done, Prefill, Round, Step

    ids: list[int] = []
    tops: list = []
    for e in events:
        if isinstance(e, Prefill):
            ids.append(e.first_token)
            tops.append(_pair(e.top_ids, e.top_logits))
        elif isinstance(e, Round):
            ids.extend(e.emitted)
            tops.extend(_pair(i, v) for i, v in zip(e.top_ids, e.top_logits))
            tops.extend([None] * (len(ids) - len(tops)))
        elif isinstance(e, Step):
            ids.append(e.token)
            tops.append(_pair(e.top_ids, e.top_logits))
        elif isinstance(e, Done):
            ids = list(e.output_ids)
    return ids, tops


def _pair(ids, logits):
    return (list(ids), list(logits)) if ids and logits else None

"""Token selection and the lossless acceptance rule, each written once.

``warp`` turns logits into the distribution a run samples from (temperature, top-p); the
draft and the target use the same warp, so speculative sampling reproduces exactly the
target's warped distribution. Greedy (temperature 0) is the one-hot limit of the same rule.
"""
from __future__ import annotations

import torch


def warp(logits: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """Probabilities [..., V] (float32). Temperature 0 gives a one-hot argmax."""
    logits = logits.float()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, gen: torch.Generator | None) -> int:
    return int(torch.multinomial(probs, 1, generator=gen))


def speculative_accept(draft: list[int], q: torch.Tensor, p: torch.Tensor,
                       gen: torch.Generator | None) -> tuple[int, int, str]:
    """Leviathan et al. 2023: accept draft token x_i with probability min(1, p_i(x)/q_i(x)).

    q: [k, V] draft distributions of the k drafted tokens; p: [k+1, V] target distributions
    at the same positions plus one. Returns (accepted count, next token, "corrected"|"bonus").
    On the first rejection the next token is drawn from norm(max(0, p_i - q_i)); after k
    acceptances it is a bonus token drawn from p_k. With one-hot p and q (greedy) this
    accepts exactly while draft == argmax p.
    """
    k = len(draft)
    if k:
        x = torch.tensor(draft, device=p.device)
        rows = torch.arange(k, device=p.device)
        px, qx = p[rows, x], q[rows, x]
        u = torch.rand(k, generator=gen, device=p.device)
        ok = (u * qx < px).tolist()  # u < p/q, written without dividing by q
        for i in range(k):
            if not ok[i]:
                return i, sample(residual(p[i], q[i]), gen), "corrected"
    return k, sample(p[k], gen), "bonus"


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)): what a rejected draft token is replaced from (p where q covers p nowhere less)."""
    r = (p - q).clamp_min(0.0)
    total = float(r.sum())
    return r / total if total > 0 else p


def greedy_accept(draft: list[int], target: list[int]) -> tuple[int, int, str]:
    """The temperature-0 case of the rule above: accept while draft == argmax p.

    target: the full model's argmax at each of the k+1 verified positions.
    """
    for i, x in enumerate(draft):
        if x != target[i]:
            return i, target[i], "corrected"
    return len(draft), target[len(draft)], "bonus"

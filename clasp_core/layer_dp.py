"""Algorithm 1 of CLaSp: choose which M layers the draft skips, by dynamic programming.

g(i, j) is the best draft hidden state after the first i layers with exactly j of them
skipped; D(i, j) = cos(g(i, j), x_i) against the full model's own state x_i. For each layer
i-1 all candidates g(i-1, j) go through f_{i-1} in one packed call (Runner.layer_candidates),
so the DP costs L layer calls, not L*M.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .runner import Runner


@dataclass
class DPResult:
    skip: list[int]                 # the M chosen layers, sorted
    D: list[list[float | None]]     # (L+1) x (M+1)
    path: list[list[int]]           # cells [i, j] from (L, M) down to (0, 0)
    seconds: float
    flags: list[list[bool]]         # (L+1) x (M+1); g(i, j) came from "skip layer i-1"


def choose_skip_set(runner: Runner, xs: torch.Tensor, p: int, M: int) -> DPResult:
    """xs: [L+1, d] full-model states x_0..x_L of the token at position p (the last accepted)."""
    t0 = time.perf_counter()
    L = xs.shape[0] - 1
    if not 0 <= M < L:
        raise ValueError(f"M must be in [0, {L - 1}] for a {L}-layer model, got {M}")
    xs = xs.float()
    dev = xs.device
    # D and the "skip" flags stay on the device until the end: one host sync per DP, not one per layer
    D_t = torch.full((L + 1, M + 1), float("nan"), device=dev)
    skip_t = torch.zeros(L + 1, M + 1, dtype=torch.bool, device=dev)   # g(i, j) came from "skip layer i-1"
    # g_prev[j] = g(i-1, j) as rows of one tensor; row j exists for j <= min(i-1, M)
    g_prev = xs[0:1].to(runner.dtype)
    D_t[0, 0] = 1.0
    one, yes = torch.ones(1, device=dev), torch.ones(1, dtype=torch.bool, device=dev)
    for i in range(1, L + 1):
        x_i = xs[i][None]
        top = min(i, M)                                        # g(i, j) exists for j <= top
        n_run = min(i - 1, M)                                  # j = 1..n_run may run layer i-1
        cs_skip = F.cosine_similarity(g_prev[:top].float(), x_i, dim=-1)        # a = g(i-1, j-1)
        if n_run:
            ran = runner.layer_candidates(i - 1, g_prev[1:n_run + 1], p)        # b = f(g(i-1, j))
            cs_run = F.cosine_similarity(ran.float(), x_i, dim=-1)
            take = cs_skip[:n_run] > cs_run                  # keep the larger similarity
            chosen = torch.where(take[:, None], g_prev[:n_run], ran)
            best = torch.maximum(cs_skip[:n_run], cs_run)
        else:
            take = cs_skip[:0] > 0
            chosen, best = g_prev[:0], cs_skip[:0]
        rows, sims = [xs[i:i + 1].to(runner.dtype), chosen], [one, best]
        if top == i:                                           # j = i: all of the first i layers skipped
            rows.append(g_prev[i - 1:i])
            sims.append(cs_skip[i - 1:i])
            take = torch.cat([take, yes])
        g_prev = torch.cat(rows)
        D_t[i, :top + 1] = torch.cat(sims)
        skip_t[i, 1:top + 1] = take
    D = [[None if v != v else v for v in row] for row in D_t.tolist()]      # NaN: no such cell
    flags = skip_t.tolist()
    skip, path = backtrack(flags, L, M)
    return DPResult(skip=skip, D=D, path=path, seconds=time.perf_counter() - t0, flags=flags)


def backtrack(flags: list[list[bool]], L: int, M: int) -> tuple[list[int], list[list[int]]]:
    """(skip set, path of cells from (L, M) down to (0, 0)) read from the DP's skip flags."""
    i, j = L, M
    skip, path = [], [[i, j]]
    while i > 0:
        if j > 0 and flags[i][j]:
            skip.append(i - 1)
            j -= 1
        i -= 1
        path.append([i, j])
    assert j == 0, "backtrack must end at (0, 0)"
    return sorted(skip), path

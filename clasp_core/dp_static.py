"""The layer DP as fixed-shape device work, and the DP that rides a verification pass.

``layer_dp.choose_skip_set`` is the reference: one eager packed call per layer, whose candidate
count grows with the layer (min(i - 1, M)) and whose mask, slots and rotary are rebuilt each time.
Here every shape is fixed by (L, M, capacity): the candidate block is always M rows (the rows that do
not exist yet are padding, never read into a defined cell), the position p is a device scalar, the
mask, slots and rotary are built once per DP from it, and the cosines, the choice and the D/flag
writes stay on the device. The host reads D and the flags once, at the end, then backtracks.

On CUDA the whole DP is captured as one graph per (M, capacity) before the run's clock starts
(``prepare``, called from the strategy's prepare), as fastpath captures the step graphs; a failed
capture says so loudly and the same fixed-shape work runs eagerly.

``verify_with_dp`` runs a verification block and the DP's candidates of the token just before it
through each layer in one call (one read of the layer's weights for both): the ``clasp-fused``
strategy.
"""
from __future__ import annotations

import os
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from .layer_dp import DPResult, backtrack, choose_skip_set


class StaticDP:
    """The DP's buffers for one (runner, M): inputs (states, p), the candidates g, and D/flags."""

    def __init__(self, runner, M: int):
        if M < 1:
            raise ValueError("the fixed-shape DP needs M >= 1 (M = 0 has no candidates)")
        r, dev = runner, runner.device
        L = r.num_layers
        self.r, self.M, self.L, self.capacity = r, M, L, r.capacity
        self.xs = torch.zeros(L + 1, r.hidden, device=dev)                  # x_0..x_L of the token, fp32
        self.p = torch.zeros((), dtype=torch.long, device=dev)              # its position
        self.g = torch.zeros(M + 1, r.hidden, device=dev, dtype=r.dtype)    # g(i, 0..M) of the current i
        self.cos = torch.zeros(1, M, r.head_dim, device=dev, dtype=r.dtype)  # the candidates' rotary (at p)
        self.sin = torch.zeros_like(self.cos)
        self.D = torch.full((L + 1, M + 1), float("nan"), device=dev)
        self.flags = torch.zeros(L + 1, M + 1, dtype=torch.bool, device=dev)
        j, i = torch.arange(1, M + 1, device=dev), torch.arange(L + 1, device=dev)[:, None]
        self.may_run = j <= i - 1           # [L+1, M]: cell (i, j) has a "run layer i-1" candidate
        self.forced = j == i                # (i, i): every one of the first i layers skipped
        self.defined = j <= i
        self.slots = torch.arange(M, device=dev)
        self.cols = torch.arange(self.capacity, device=dev)
        self.nan = torch.tensor(float("nan"), device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed: str | None = None      # why the capture failed (eager from then on)
        self.capture_s = 0.0
        self.math = False                   # the default SDPA backend failed on this shape (CUDA)

    # ---- the pieces -------------------------------------------------------------------------
    def candidates(self, p: torch.Tensor, lo, width: int):
        """Write slots and mask of the M candidates: all at position p, each seeing [0, p) and its own
        scratch slot lo + c only (``lo``: a device or host integer; ``width``: the mask's columns)."""
        at = (self.slots + lo).clamp_(max=self.capacity - 1)
        cols = self.cols[None, :width]
        return at, (cols < p) | (cols == at[:, None])

    def begin(self) -> None:
        """g(0, j) = x_0 for every row (rows j > 0 are padding until their cell exists); D(0, 0) = 1."""
        self.g.copy_(self.xs[0].to(self.g.dtype).expand_as(self.g))
        self.D.fill_(float("nan"))
        self.D[0, 0] = 1.0
        self.flags.zero_()

    def step(self, i: int, ran: torch.Tensor) -> None:
        """Row i of the table from g(i-1, .) and ran[j-1] = f_{i-1}(g(i-1, j)), the same math as the
        reference: keep the larger cosine to x_i; (i, i) is the all-skipped cell."""
        g, M = self.g, self.M
        x_i = self.xs[i][None]
        cs_skip = F.cosine_similarity(g[:M].float(), x_i, dim=-1)            # a = g(i-1, j-1)
        cs_run = F.cosine_similarity(ran.float(), x_i, dim=-1)               # b = f(g(i-1, j))
        take = torch.where(self.may_run[i], cs_skip > cs_run, self.forced[i])
        best = torch.where(take, cs_skip, cs_run)          # max(a, b) where both exist, a at (i, i)
        self.D[i, 1:] = torch.where(self.defined[i], best, self.nan)
        self.D[i, 0] = 1.0
        self.flags[i, 1:] = take
        g[1:] = torch.where(take[:, None], g[:M], ran)
        g[0] = self.xs[i].to(g.dtype)

    def layer(self, i: int, x: torch.Tensor, cos, sin, at, mask, end, rope) -> torch.Tensor:
        """Decoder layer i on x [1, T, d]; on CUDA the math SDPA backend once the default one failed."""
        r = self.r
        if self.math:
            return r.layer_step_math(i, x, cos, sin, at, mask, end, RuntimeError("earlier"))
        try:
            return r.layer_step(i, x, cos, sin, at, mask, end, rope)
        except RuntimeError as e:
            if x.device.type != "cuda" or torch.cuda.is_current_stream_capturing():
                raise
            self.math = True
            return r.layer_step_math(i, x, cos, sin, at, mask, end, e)

    def run(self) -> None:
        """The whole DP on the buffers: fixed shapes, no host synchronisation (what the graph records)."""
        r, M = self.r, self.M
        at, mask = self.candidates(self.p, self.p + 1, self.capacity)
        rope = r.backend.rope(self.cos, self.sin, M)
        self.begin()
        for i in range(1, self.L + 1):
            ran = self.layer(i - 1, self.g[None, 1:], self.cos, self.sin, at, mask, None, rope)[0]
            self.step(i, ran)

    # ---- the host's side ---------------------------------------------------------------------
    def load(self, xs: torch.Tensor, p: int, need: int) -> None:
        """The token's states, its position and the candidates' rotary into the buffers (device work, no
        sync). The rotary runs here, outside the graph, as fastpath's ``load`` does: the model's own rotary
        module may read a position back to the host (dynamic RoPE), which a capture cannot hold."""
        if need > self.capacity:
            raise ValueError("cache too small for the layer DP's candidates")
        self.xs.copy_(xs)
        self.p.fill_(p)
        cos, sin = self.r.rotary(self.cos, torch.full((1, self.M), p, device=self.p.device))
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def result(self, t0: float) -> DPResult:
        """One copy of D and the flags to the host, then the backtrack."""
        L, M = self.L, self.M
        host = torch.cat([self.D, self.flags.to(self.D.dtype)]).tolist()
        D = [[None if v != v else v for v in row] for row in host[:L + 1]]
        flags = [[v != 0 for v in row] for row in host[L + 1:]]
        skip, path = backtrack(flags, L, M)
        return DPResult(skip=skip, D=D, path=path, seconds=time.perf_counter() - t0, flags=flags)

    @torch.inference_mode()
    def choose(self, xs: torch.Tensor, p: int) -> DPResult:
        """The DP on the states ``xs`` [L+1, d] of the token at position p (as choose_skip_set)."""
        t0 = time.perf_counter()
        self.load(xs, p, p + 1 + self.M)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.run()
        return self.result(t0)

    # ---- capture ------------------------------------------------------------------------------
    @torch.inference_mode()
    def capture(self) -> float:
        """Record ``run`` as one CUDA graph; returns the seconds spent. On failure: loud, and eager.

        p is set to the valid length - 1 first, so the warm-up's and the capture's writes land in the
        scratch slots past the valid length, which nothing reads before overwriting them."""
        if self.graph is not None or self.failed is not None or self.r.device.type != "cuda":
            return 0.0
        t0 = time.perf_counter()
        self.p.fill_(max(self.r.length - 1, 0))
        try:
            with torch.cuda.device(self.r.device):
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):       # warm up on a side stream (PyTorch's CUDA graph docs)
                    for _ in range(2):
                        self.run()
                torch.cuda.current_stream().wait_stream(stream)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    self.run()
            self.graph = g
        except RuntimeError as e:
            self.failed = f"the layer DP (M={self.M}): {e}"
            msg = (f"CUDA graph capture failed for {self.failed}; running the fixed-shape DP without a graph "
                   f"(every DP timing from here on is WITHOUT a graph)")
            print(f"!! {msg}", file=sys.stderr, flush=True)
            warnings.warn(msg, stacklevel=2)
            self.graph = None
        finally:
            torch.cuda.synchronize(self.r.device)
        self.capture_s = time.perf_counter() - t0
        return self.capture_s


# ---- which DP runs ----------------------------------------------------------------------------
def wanted(runner) -> bool:
    """Whether the layer DP runs the fixed-shape path: on CUDA (one graph), not on a CPU, where the eager
    DP measured faster on the embedded model (it runs min(i - 1, M) rows at layer i, not M: BENCHMARKS.md).
    ``CLASP_DP_STATIC=1`` / ``0`` forces it on / off; never over several devices (a device_map)."""
    if runner.spread:
        return False
    say = os.environ.get("CLASP_DP_STATIC")
    return say == "1" if say in ("0", "1") else runner.device.type == "cuda"


def static_dp(runner, M: int) -> StaticDP:
    """The runner's StaticDP for M (one per (M, capacity): a grown cache holds new tensors)."""
    table = runner.__dict__.setdefault("dp_static", {})
    key = (M, runner.capacity)
    if key not in table:
        for k in [k for k in table if k[1] != runner.capacity]:
            del table[k]                    # its graph holds the old cache's tensors
        table[key] = StaticDP(runner, M)
    return table[key]


def prepare(runner, M: int) -> float:
    """Capture the DP's graph for M now, outside any timed run; the seconds spent (0 where none is used)."""
    if M < 1 or not wanted(runner) or runner.device.type != "cuda":
        return 0.0
    return static_dp(runner, M).capture()


def choose(runner, xs: torch.Tensor, p: int, M: int) -> DPResult:
    """The layer DP on the states of the token at p: fixed-shape (and graphed) where ``wanted``, else the
    eager reference. Both give the same table (tests/test_dp_static.py)."""
    if M >= 1 and M < runner.num_layers and wanted(runner):
        return static_dp(runner, M).choose(xs, p)
    return choose_skip_set(runner, xs, p, M)


def choose_fixed_shape(runner, xs: torch.Tensor, p: int, M: int) -> DPResult:
    """The fixed-shape DP whatever ``wanted`` says (gpu-check's dp step sets it beside the eager one): its
    graph captured first where the runner is on CUDA, its eager math elsewhere."""
    dp = static_dp(runner, M)
    dp.capture()                            # once; nothing off CUDA or after a failed capture
    return dp.choose(xs, p)


# ---- the DP riding a verification ---------------------------------------------------------------
@torch.inference_mode()
def verify_with_dp(runner, ids: torch.Tensor, pos: int, xs: torch.Tensor, M: int, *, hidden: bool = False,
                   head: bool = True):
    """Verify tokens ``ids`` at positions pos.. and, in the same layer calls, run the layer DP of the
    token at p = pos - 1 (its full-model states ``xs`` [L+1, d], from the previous verification).

    Layer i gets one block: the T verification rows (causal over the prefix, K/V kept at pos..pos+T-1)
    then the DP's M candidate rows (at position p, seeing [0, p) and their own slot only, K/V in the
    scratch slots pos+T.. past the block, never kept). The verification's rows are the ordinary forward's;
    the candidates' are the fixed-shape DP's. Returns (logits or final-normed states as
    ``Runner.forward``, the block's states [L+1, T, d] or None, the DPResult; its seconds are 0: the DP's
    share of the pass cannot be timed apart from the verification it rides)."""
    r = runner
    if r.spread or M < 1:       # several devices, or no candidates: the two one after the other
        out = r.forward(ids, pos, hidden=hidden, head=head)
        res = choose_skip_set(r, xs, pos - 1, M)
        res.seconds = 0.0
        return (*out, res) if hidden else (out, None, res)
    dp = static_dp(r, M)
    T = ids.shape[0]
    end = pos + T + M
    dp.load(xs, pos - 1, end)
    x = r.embed(ids)[None]
    at_v = torch.arange(pos, pos + T, device=x.device)
    cos_v, sin_v = r.rotary(x, at_v[None])
    at_c, mask_c = dp.candidates(dp.p, pos + T, end)
    cos, sin = torch.cat([cos_v, dp.cos], 1), torch.cat([sin_v, dp.sin], 1)
    at = torch.cat([at_v, at_c])
    mask = torch.cat([dp.cols[None, :end] <= at_v[:, None], mask_c])
    rope = r.backend.rope(cos, sin, T + M)
    dp.begin()
    hs = [x[0]] if hidden else None
    for i in range(r.num_layers):
        out = dp.layer(i, torch.cat([x, dp.g[None, 1:]], 1), cos, sin, at, mask, end, rope)
        x = out[:, :T]
        dp.step(i + 1, out[0, T:])
        if hidden:
            hs.append(x[0])
    r.cache.length = pos + T
    y = r.norm(x)
    logits = r.head(y)[0] if head else y[0]
    res = dp.result(time.perf_counter())
    res.seconds = 0.0
    return logits, torch.stack(hs) if hidden else None, res

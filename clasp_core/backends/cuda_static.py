"""Static-shape layer steps and per-layer CUDA graphs (the GPU fast path, gpt-fast style).

For a few token counts T (1 for a decode or draft step, up to K+1 for verification, padded
up to a bucket) every decoder layer runs on static buffers: the hidden state [1, T, d], the
rotary cos/sin, the write positions and a mask over the whole cache. Each (layer, T) pair is
captured once as a CUDA graph. Any skip set replays without recapturing: the graphs of the
layers that run are replayed in order, each reading and writing the same hidden buffer, and a
skipped layer is simply not replayed. On a CPU the same static math runs eagerly (used by the
tests to check it against the ordinary path); graphs are only captured on CUDA.
"""
from __future__ import annotations

import sys
import time
import warnings

import torch

from .modules import Modules

BUCKETS = (1, 2, 4, 8, 16, 32)


def bucket_for(T: int) -> int | None:
    """The smallest bucket holding T tokens (None: too many, the ordinary path runs them)."""
    return next((b for b in BUCKETS if b >= T), None)


def buckets_upto(max_T: int) -> tuple[int, ...]:
    """The buckets a run with blocks of up to max_T tokens uses (all of them past the largest)."""
    top = bucket_for(max_T) or BUCKETS[-1]
    return tuple(b for b in BUCKETS if b <= top)


class StaticSteps:
    """Static buffers and graphs for one Runner; the KV cache is the Runner's own."""

    def __init__(self, runner, use_graphs: bool):
        self.r = runner
        self.use_graphs = use_graphs and runner.device.type == "cuda" and not runner.spread
        self.bufs: dict[int, dict[str, torch.Tensor]] = {}
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.pool = None
        self.capture_s = 0.0
        self.failed: str | None = None       # why capture failed (graphs are off from then on)
        self.capacity = runner.capacity
        self.cols = torch.arange(self.capacity, device=runner.device)   # cache slots, for the masks

    # ---- buffers -------------------------------------------------------------------------
    def buffers(self, T: int) -> dict[str, torch.Tensor]:
        """The static inputs of bucket T; the graphs read these very tensors on every replay."""
        if T not in self.bufs:
            r, dev = self.r, self.r.device
            mask = torch.zeros(T, self.capacity, device=dev, dtype=torch.bool)
            mask[:, 0] = True      # never a row that sees nothing (the warm-up before a capture reads it)
            self.bufs[T] = dict(
                x=torch.zeros(1, T, r.hidden, device=dev, dtype=r.dtype),
                cos=torch.zeros(1, T, r.head_dim, device=dev, dtype=r.dtype),
                sin=torch.zeros(1, T, r.head_dim, device=dev, dtype=r.dtype),
                pos=torch.zeros(T, device=dev, dtype=torch.long),
                mask=mask,
                offsets=torch.arange(T, device=dev),
            )
        return self.bufs[T]

    def load(self, ids: torch.Tensor, start: int, T: int) -> dict[str, torch.Tensor]:
        """Write this call's inputs into the bucket's static buffers, on the device (no host sync).

        Padding rows repeat the last token at the next positions: ordinary values, written to cache
        slots past the valid length that no real row attends to, and overwritten before any does."""
        r, b = self.r, self.buffers(T)
        n = ids.shape[0]
        pos = torch.add(b["offsets"], start, out=b["pos"]).clamp_(max=self.capacity - 1)
        x = b["x"][0]
        x[:n].copy_(r.embed(ids))
        if n < T:
            x[n:].copy_(x[n - 1:n].expand(T - n, -1))
        cos, sin = r.rotary(b["x"], pos[None])
        b["cos"].copy_(cos)
        b["sin"].copy_(sin)
        torch.le(self.cols[None, :], pos[:, None], out=b["mask"])   # row t sees slots <= its position
        return b

    # ---- one layer on the static buffers ---------------------------------------------------
    def layer_step(self, i: int, T: int) -> None:
        """Layer i on bucket T's buffers, in place: the Runner's layer step over the whole cache."""
        b = self.buffers(T)
        b["x"].copy_(self.r.layer_step(i, b["x"], b["cos"], b["sin"], b["pos"], b["mask"]))

    def run_layer(self, i: int, T: int) -> None:
        g = self.graphs.get((i, T)) if self.use_graphs else None
        if g is None and self.use_graphs:
            g = self.capture(i, T)                # lazily, if prepare() did not cover this bucket
        if g is None:
            self.layer_step(i, T)                 # CPU, CLASP_CUDA_GRAPHS=0 or a failed capture
        else:
            g.replay()

    # ---- capture -------------------------------------------------------------------------
    @torch.inference_mode()
    def capture(self, i: int, T: int) -> torch.cuda.CUDAGraph | None:
        """Record layer i on bucket T as a CUDA graph; None (and no graphs from now on) if it fails.

        The warm-up runs the layer for real, so the bucket's buffers and the layer's cache are
        saved first and put back after: capturing leaves no trace in the run's state."""
        t0 = time.perf_counter()
        b = self.buffers(T)
        state = [*b.values(), *self.r.cache.view(i)]
        saved = [t.clone() for t in state]
        g = None
        try:
            g = self.record(i, T)
            self.graphs[(i, T)] = g
        except RuntimeError as e:                # an op that cannot be captured: run without graphs
            self.failed = f"layer {i}, {T} tokens: {e}"
            msg = (f"CUDA graph capture failed for {self.failed}; running the static path without graphs "
                   f"(every timing from here on is WITHOUT graphs)")
            print(f"!! {msg}", file=sys.stderr, flush=True)   # loud: a warning alone is easy to miss
            warnings.warn(msg, stacklevel=2)
            self.use_graphs = False
            self.graphs.clear()                  # none of them replays from now on
        finally:
            for t, s in zip(state, saved):
                t.copy_(s)
            if self.r.device.type == "cuda":
                torch.cuda.synchronize(self.r.device)
            self.capture_s += time.perf_counter() - t0
        return g

    def record(self, i: int, T: int) -> torch.cuda.CUDAGraph:
        with torch.cuda.device(self.r.device):    # the model's GPU, whichever is current
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):       # warm up on a side stream before capturing (PyTorch docs)
                for _ in range(2):
                    self.layer_step(i, T)
            torch.cuda.current_stream().wait_stream(stream)
            if self.pool is None:                 # one pool: a step leaves nothing alive in it, so any
                self.pool = torch.cuda.graph_pool_handle()   # order of replays is safe
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self.pool):
                self.layer_step(i, T)
        return g

    @torch.inference_mode()
    def capture_all(self, max_T: int) -> float:
        """Capture every (layer, bucket) needed for up to max_T tokens; returns the seconds spent
        (0 when no graph runs: off CUDA, or when a capture failed)."""
        t0 = self.capture_s
        for T in buckets_upto(max_T):
            for i in range(self.r.num_layers):
                if not self.use_graphs:
                    break
                if (i, T) not in self.graphs:
                    self.capture(i, T)
        return self.capture_s - t0 if self.use_graphs else 0.0

    # ---- a block on the static path ---------------------------------------------------------
    def block(self, ids: torch.Tensor, start: int):
        """The block's inputs loaded into its bucket's buffers, and the step that runs layer i on them in place."""
        T = bucket_for(ids.shape[0])
        b = self.load(ids, start, T)

        def step(i: int, x: torch.Tensor) -> torch.Tensor:
            self.run_layer(i, T)                  # in place: x is the bucket's static buffer
            return x

        return b["x"], step


class CudaStatic(Modules):
    """Short blocks (decode, draft, verify) on static buffers, layer by layer as CUDA graphs on a GPU (eagerly
    on a CPU); every layer's math and the head are the ``inner`` backend's, and so is any longer block."""

    name = "cuda-static"

    def __init__(self, runner, inner: Modules):
        super().__init__(runner)
        self.inner = inner
        self.packed = inner.packed

    def rope(self, cos, sin, T: int):
        return self.inner.rope(cos, sin, T)

    def layer(self, i, x, cos, sin, at, mask=None, end=None, rope=None) -> torch.Tensor:
        return self.inner.layer(i, x, cos, sin, at, mask, end, rope)

    def head(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.head(y)

    def room(self, capacity: int) -> int:
        """Static buffers span the whole cache: room for padded blocks, rounded up."""
        return -(-(capacity + BUCKETS[-1]) // 256) * 256 if capacity > self.r.cache.capacity else capacity

    def allocated(self) -> None:
        """Graphs hold the old cache tensors: start afresh, keep counting, and do not retry a failed capture."""
        old = self.steps
        spent = old.capture_s if old is not None and old.use_graphs and old.graphs else 0.0
        failed = old.failed if old is not None else None
        self.steps = StaticSteps(self.r, use_graphs=failed is None)
        self.steps.capture_s, self.steps.failed = spent, failed

    def prepare(self, max_tokens: int) -> float:
        return self.steps.capture_all(max_tokens) if self.steps is not None else 0.0

    def block(self, ids: torch.Tensor, start: int):
        if self.steps is None or start == 0 or bucket_for(ids.shape[0]) is None:
            return None
        return self.steps.block(ids, start)

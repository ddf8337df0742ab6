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

import time

import torch
import torch.nn.functional as F

BUCKETS = (1, 2, 4, 8, 16, 32)


def bucket_for(T: int) -> int | None:
    return next((b for b in BUCKETS if b >= T), None)


class StaticSteps:
    """Static buffers and graphs for one Runner; the cache tensors are the Runner's own."""

    def __init__(self, runner, use_graphs: bool):
        self.r = runner
        self.use_graphs = use_graphs and runner.device.type == "cuda" and not runner.spread
        self.bufs: dict[int, dict[str, torch.Tensor]] = {}
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.pool = None
        self.capture_s = 0.0
        self.capacity = runner.capacity

    # ---- buffers -------------------------------------------------------------------------
    def buffers(self, T: int) -> dict[str, torch.Tensor]:
        if T not in self.bufs:
            r, dev = self.r, self.r.device
            self.bufs[T] = dict(
                x=torch.zeros(1, T, r.hidden, device=dev, dtype=r.dtype),
                cos=torch.zeros(1, T, r.head_dim, device=dev, dtype=r.dtype),
                sin=torch.zeros(1, T, r.head_dim, device=dev, dtype=r.dtype),
                pos=torch.zeros(T, device=dev, dtype=torch.long),
                mask=torch.zeros(1, 1, T, self.capacity, device=dev, dtype=torch.bool),
            )
        return self.bufs[T]

    def load(self, ids: torch.Tensor, start: int, T: int) -> dict[str, torch.Tensor]:
        """Copy this call's inputs into the bucket's static buffers (padding rows repeat the last token)."""
        r, b = self.r, self.buffers(T)
        n = ids.shape[0]
        if n < T:
            ids = torch.cat([ids, ids[-1:].expand(T - n)])
        pos = torch.arange(start, start + T, device=ids.device).clamp_max(self.capacity - 1)
        x = r.embed(ids)[None]
        cos, sin = r.rotary(x, pos[None])
        b["x"].copy_(x)
        b["cos"].copy_(cos)
        b["sin"].copy_(sin)
        b["pos"].copy_(pos)
        cols = torch.arange(self.capacity, device=ids.device)
        b["mask"][0, 0].copy_(cols[None, :] <= pos[:, None])
        return b

    # ---- one layer on the static buffers ---------------------------------------------------
    def layer_step(self, i: int, T: int) -> None:
        r, b = self.r, self.buffers(T)
        layer = r.layers[i]
        att = layer.self_attn
        x = b["x"]
        q, k, v = r._attend(att, layer.input_layernorm(x), b["cos"], b["sin"])
        r.k[i].index_copy_(2, b["pos"], k)
        r.v[i].index_copy_(2, b["pos"], v)
        o = F.scaled_dot_product_attention(q, r.k[i], r.v[i], attn_mask=b["mask"], scale=att.scaling,
                                           enable_gqa=r.n_kv != r.n_heads)
        h = x + att.o_proj(o.transpose(1, 2).reshape(1, T, -1))
        x.copy_(h + layer.mlp(layer.post_attention_layernorm(h)))

    def run_layer(self, i: int, T: int) -> None:
        if not self.use_graphs:
            self.layer_step(i, T)
            return
        g = self.graphs.get((i, T))
        if g is None:
            g = self.capture(i, T)
        g.replay()

    # ---- capture -------------------------------------------------------------------------
    @torch.inference_mode()
    def capture(self, i: int, T: int) -> torch.cuda.CUDAGraph:
        t0 = time.perf_counter()
        b = self.buffers(T)
        saved = {k: v.clone() for k, v in b.items()}
        ks, vs = self.r.k[i].clone(), self.r.v[i].clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):           # warm-up outside the graph, as CUDA graphs require
            for _ in range(2):
                self.layer_step(i, T)
        torch.cuda.current_stream().wait_stream(stream)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool):
            self.layer_step(i, T)
        for k, v in saved.items():                 # capturing ran the layer: put the state back
            b[k].copy_(v)
        self.r.k[i].copy_(ks)
        self.r.v[i].copy_(vs)
        torch.cuda.synchronize()
        self.graphs[(i, T)] = g
        self.capture_s += time.perf_counter() - t0
        return g

    @torch.inference_mode()
    def capture_all(self, max_T: int) -> float:
        """Capture every (layer, bucket) needed for up to max_T tokens; returns the seconds spent."""
        if not self.use_graphs:
            return 0.0
        t0 = self.capture_s
        for T in BUCKETS:
            if T > bucket_for(max_T):
                break
            for i in range(self.r.num_layers):
                if (i, T) not in self.graphs:
                    self.capture(i, T)
        return self.capture_s - t0

    # ---- a forward over the static path --------------------------------------------------------
    def forward(self, ids: torch.Tensor, start: int, skip, hidden: bool, last_only: bool):
        n = ids.shape[0]
        T = bucket_for(n)
        b = self.load(ids, start, T)
        hs = [b["x"][0, :n].clone()] if hidden else None
        for i in range(self.r.num_layers):
            if i not in skip:
                self.run_layer(i, T)
            if hidden:
                hs.append(b["x"][0, :n].clone())
        y = b["x"][:, n - 1:n] if last_only else b["x"][:, :n]
        logits = self.r.lm_head(self.r.norm(y))[0]
        return (logits, torch.stack(hs)) if hidden else logits

"""The model's own modules for every layer and the head: the reference path, on any device.

A GPU runs it for blocks the static path does not take (a prompt, a block past the largest bucket),
and a CPU runs it where no packed copy of the weights fits (cpu.py).
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F


def module_layer(r, i: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, at: torch.Tensor,
                 mask: torch.Tensor | None = None, end: int | None = None, pk=None) -> torch.Tensor:
    """Decoder layer i of Runner ``r`` on x [1, T, d] with the model's modules (``pk``: a cpu.Packed whose
    fused products stand in for the projections)."""
    layer, att = r.layers[i], r.layers[i].self_attn
    T = x.shape[1]
    h = layer.input_layernorm(x)
    q, k, v = pk.qkv(i, h) if pk else (att.q_proj(h), att.k_proj(h), att.v_proj(h))
    q = q.view(1, T, -1, r.head_dim)
    k = k.view(1, T, -1, r.head_dim)
    v = v.view(1, T, -1, r.head_dim).transpose(1, 2)
    if hasattr(att, "q_norm"):  # Qwen3 normalises q and k per head
        q, k = att.q_norm(q), att.k_norm(k)
    q, k = r.apply_rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    K, V = r.cache.update(i, at, k, v, end)
    o = F.scaled_dot_product_attention(q, K, V, attn_mask=mask, is_causal=mask is None and T > 1,
                                       scale=att.scaling, enable_gqa=r.n_kv != r.n_heads)
    o = o.transpose(1, 2).reshape(1, T, -1)
    x = x + (pk.o(i, o) if pk else att.o_proj(o))
    h = layer.post_attention_layernorm(x)
    return x + (pk.mlp(i, h) if pk else layer.mlp(h))


class Modules:
    """How a layer and the head run, and what a block needs around them; this backend: the modules."""

    name = "modules"
    packed = None                   # cpu.Packed where the CPU backend runs
    steps = None                    # cuda_static.StaticSteps where the static backend runs

    def __init__(self, runner):
        self.r = weakref.proxy(runner)      # the runner owns its backend: no cycle, freed with it

    def rope(self, cos: torch.Tensor, sin: torch.Tensor, T: int):
        """Rotary tables laid out once per forward for the layer calls (None: each layer takes cos/sin)."""
        return None

    def layer(self, i: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, at: torch.Tensor,
              mask: torch.Tensor | None = None, end: int | None = None, rope=None) -> torch.Tensor:
        return module_layer(self.r, i, x, cos, sin, at, mask, end)

    def head(self, y: torch.Tensor) -> torch.Tensor:
        """Logits of final-normed states y [1, T, d]."""
        return self.r.lm_head(y)

    def verify_logits(self, y: torch.Tensor, drafted: list[int] | None) -> torch.Tensor:
        """A verification's logits [rows, V] from its final-normed states y [T, d]; ``drafted`` (greedy) lets a
        backend stop after the row of the first rejected draft, where the rows after it decide nothing."""
        return self.head(y[None])[0]

    # ---- a block on static buffers (cuda_static.py); the ordinary path here ----------------
    def room(self, capacity: int) -> int:
        """The cache capacity to allocate for ``capacity`` positions."""
        return capacity

    def allocated(self) -> None:
        """The cache was (re)allocated."""

    def prepare(self, max_tokens: int) -> float:
        """Work before any timed run (graph capture); its seconds."""
        return 0.0

    def block(self, ids: torch.Tensor, start: int):
        """(x, step) of a block this backend runs on its own buffers, else None (the ordinary forward)."""
        return None

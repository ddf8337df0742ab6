"""The CPU layout of the projection weights for short blocks (decode, draft, small verify).

nn.Linear stores a weight as [out, in] and a one-token product x @ W.T runs through MKL's
matrix-vector kernel, which on this kind of CPU streams the weights at about 12 GB/s. The
same product on a copy laid out [in, out] runs at about twice that (measured on the embedded
model: all decoder-layer projections 35 -> 26 ms, lm_head 9.1 -> 4.6 ms for one token; see
BENCHMARKS.md). So for blocks of up to ``max_tokens`` tokens the runner uses copies laid out
[in, out], with q|k|v and gate|up fused into one product each. Longer blocks (the prompt, the
DP's candidates, verifications of 4 or more tokens) keep the modules' own weights, which
MKL's matrix-matrix kernel reads faster (a 9-token verification: 80 ms against 100 ms packed).

Only the layout changes: the same numbers are multiplied and summed. The sums may round in
another order than transformers' (the last bits of a logit), as any change of kernel does;
greedy losslessness is checked against ``generate`` token by token in the tests and the bench.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class LayerWeights:
    qkv: torch.Tensor               # [d, (n_heads + 2 n_kv) * head_dim]
    qkv_bias: torch.Tensor | None
    o: torch.Tensor                 # [n_heads * head_dim, d]
    o_bias: torch.Tensor | None
    gate_up: torch.Tensor           # [d, 2 * ff]
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor              # [ff, d]
    down_bias: torch.Tensor | None
    act: torch.nn.Module


def _t(*linears: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weights of linears with the same input, side by side, laid out [in, out]; their biases."""
    w = torch.cat([l.weight for l in linears]).t().contiguous()
    biases = [l.bias for l in linears]
    if all(b is None for b in biases):
        return w, None
    return w, torch.cat([b if b is not None else torch.zeros(l.out_features, dtype=w.dtype, device=w.device)
                         for l, b in zip(linears, biases)])


def _mm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = x @ w
    return y if b is None else y + b


class Packed:
    def __init__(self, layers, lm_head: torch.nn.Linear, max_tokens: int = 3):
        self.max_tokens = max_tokens
        self.layers: list[LayerWeights] = []
        for layer in layers:
            att, mlp = layer.self_attn, layer.mlp
            qkv, qkv_b = _t(att.q_proj, att.k_proj, att.v_proj)
            o, o_b = _t(att.o_proj)
            gu, gu_b = _t(mlp.gate_proj, mlp.up_proj)
            down, down_b = _t(mlp.down_proj)
            self.layers.append(LayerWeights(qkv, qkv_b, o, o_b, gu, gu_b, down, down_b, mlp.act_fn))
        self.split = [layers[0].self_attn.q_proj.out_features, layers[0].self_attn.k_proj.out_features,
                      layers[0].self_attn.v_proj.out_features]
        self.ff = layers[0].mlp.gate_proj.out_features
        self.head, self.head_bias = _t(lm_head)

    def qkv(self, i: int, h: torch.Tensor):
        w = self.layers[i]
        return _mm(h, w.qkv, w.qkv_bias).split(self.split, dim=-1)

    def o(self, i: int, x: torch.Tensor) -> torch.Tensor:
        w = self.layers[i]
        return _mm(x, w.o, w.o_bias)

    def mlp(self, i: int, h: torch.Tensor) -> torch.Tensor:
        w = self.layers[i]
        gate, up = _mm(h, w.gate_up, w.gate_up_bias).split(self.ff, dim=-1)
        return _mm(w.act(gate) * up, w.down, w.down_bias)

    def lm_head(self, y: torch.Tensor) -> torch.Tensor:
        return _mm(y, self.head, self.head_bias)


def want_packed(model: torch.nn.Module, device: torch.device) -> bool:
    """On a CPU, when a second copy of the weights takes at most a quarter of the RAM.

    ``CLASP_CPU_PACKED=0`` turns it off (then every block uses the modules' own weights)."""
    if device.type != "cpu" or os.environ.get("CLASP_CPU_PACKED", "1") == "0":
        return False
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return False
    return size <= ram // 4

"""The CPU's weights and products for short blocks (decode, draft, verification, the DP's candidates).

Where the engine's own kernel was built (cpu_kernel.py, kernels/linear.c) every product of a block of
up to its MAX_ROWS rows runs on it, over the weights in nn.Linear's own [out, in] layout, with q|k|v
and gate|up fused into one product each; the head is the module's own weight. It streams the weights
at about twice the rate of MKL's fp32 matrix-vector kernel on an AMD EPYC and costs far less than
MKL's matrix-matrix kernel for 2-16 rows (BENCHMARKS.md).

Without it (no compiler, not Linux, ``CLASP_CPU_KERNEL=0``) torch multiplies, as before the kernel:
nn.Linear's x @ W.T runs MKL's matrix-vector kernel at about 12 GB/s there, while the same product
on a copy laid out [in, out] runs at about twice that, so blocks of up to ``max_tokens`` (3) tokens use
[in, out] copies of q|k|v, gate|up and the head. The two projections whose input is as wide as or
wider than their output (o and down) measured the other way round, so they keep the modules' own
weights. Longer blocks keep the modules' own weights, which MKL's matrix-matrix kernel reads faster.

Only the layout and the kernel change: the same numbers are multiplied and summed. The sums may round
in another order than transformers' (the last bits of a logit), as any change of kernel does; greedy
losslessness is checked against ``generate`` token by token in the tests and the bench.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import cpu_kernel
from .modules import Modules, module_layer


@dataclass
class LayerWeights:
    qkv: torch.Tensor               # [d, (n_heads + 2 n_kv) * head_dim]
    qkv_bias: torch.Tensor | None
    o: torch.Tensor                 # o_proj's own weight, [d, n_heads * head_dim] (not a copy)
    o_bias: torch.Tensor | None
    gate_up: torch.Tensor           # [d, 2 * ff]
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor              # down_proj's own weight, [d, ff] (not a copy)
    down_bias: torch.Tensor | None
    act: torch.nn.Module
    norm1: torch.nn.Module          # the layer's own RMSNorms (their weight and eps)
    norm2: torch.nn.Module


def _t(*linears: torch.nn.Linear, t: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weights of linears with the same input, side by side, laid out [in, out] (``t``) or stacked
    [out, in] as nn.Linear keeps them; their biases."""
    w = torch.cat([l.weight for l in linears])
    w = w.t().contiguous() if t else w.contiguous()
    biases = [l.bias for l in linears]
    if all(b is None for b in biases):
        return w, None
    return w, torch.cat([b if b is not None else torch.zeros(l.out_features, dtype=w.dtype, device=w.device)
                         for l, b in zip(linears, biases)])


def _mm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = x @ w
    return y if b is None else y + b


class Packed:
    def __init__(self, layers, lm_head: torch.nn.Linear, max_tokens: int = 3, kernel=None):
        """kernel: the engine's own product (cpu_kernel.Kernel), or None for torch's. With it every
        weight stays [out, in] (q|k|v and gate|up still fused), the head is the module's own weight
        (no copy), and blocks of up to its MAX_ROWS rows take this path."""
        self.kernel = kernel
        self.max_tokens = kernel.max_rows if kernel is not None else max_tokens
        t = kernel is None
        self.layers: list[LayerWeights] = []
        for layer in layers:
            att, mlp = layer.self_attn, layer.mlp
            qkv, qkv_b = _t(att.q_proj, att.k_proj, att.v_proj, t=t)
            gu, gu_b = _t(mlp.gate_proj, mlp.up_proj, t=t)
            self.layers.append(LayerWeights(qkv, qkv_b, att.o_proj.weight, att.o_proj.bias, gu, gu_b,
                                            mlp.down_proj.weight, mlp.down_proj.bias, mlp.act_fn,
                                            layer.input_layernorm, layer.post_attention_layernorm))
        self.split = [layers[0].self_attn.q_proj.out_features, layers[0].self_attn.k_proj.out_features,
                      layers[0].self_attn.v_proj.out_features]
        self.ff = layers[0].mlp.gate_proj.out_features
        if kernel is None:
            self.head, self.head_bias = _t(lm_head)
        else:
            self.head, self.head_bias = lm_head.weight.contiguous(), lm_head.bias
        att = layers[0].self_attn
        self.head_dim = att.head_dim
        self.n_q = self.split[0] // self.head_dim
        self.n_kv = self.split[1] // self.head_dim
        self.scale = att.scaling
        # one fused step per layer where the layer is plain Llama (Qwen3's per-head q/k norms are not)
        self.lean = not hasattr(att, "q_norm") and all(
            type(n).__name__.endswith("RMSNorm") for n in (layer.input_layernorm, layer.post_attention_layernorm))

    def fused(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """x times a fused copy (q|k|v, gate|up, the head): [in, out] for torch, [out, in] for the kernel."""
        return self.kernel(x, w, b) if self.kernel is not None else _mm(x, w, b)

    def own(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """x times a module's own [out, in] weight (o, down)."""
        return self.kernel(x, w, b) if self.kernel is not None else F.linear(x, w, b)

    def qkv(self, i: int, h: torch.Tensor):
        w = self.layers[i]
        return self.fused(h, w.qkv, w.qkv_bias).split(self.split, dim=-1)

    def o(self, i: int, x: torch.Tensor) -> torch.Tensor:
        w = self.layers[i]
        return self.own(x, w.o, w.o_bias)

    def mlp(self, i: int, h: torch.Tensor) -> torch.Tensor:
        w = self.layers[i]
        gate, up = self.fused(h, w.gate_up, w.gate_up_bias).split(self.ff, dim=-1)
        return self.own(w.act(gate) * up, w.down, w.down_bias)

    # ---- one decoder layer in few ops (decode, draft and short verify steps) ------------------
    def layer(self, i: int, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], at: torch.Tensor,
              mask: torch.Tensor | None, K: torch.Tensor, V: torch.Tensor, end: int | None) -> torch.Tensor:
        """Decoder layer i on x [1, T, d], the same math as transformers' Llama layer in fewer ops.

        Python and per-op overhead is about half of a CPU decode step of a small model, so this
        runs a layer in about 20 ops instead of about 45: q|k|v and gate|up as one product each,
        RoPE on q and k together as one multiply-add with a sign-folded sine (``rope_tables``),
        each of K and V written to the cache by one copy. RoPE and the norms are bitwise those
        of transformers (the fused RMSNorm is used at float32 only, where it is bitwise the same).
        K, V: the layer's whole cache buffers [1, n_kv, capacity, head_dim]."""
        w = self.layers[i]
        T, hd = x.shape[1], self.head_dim
        h = norm(w.norm1, x)
        qkv = self.fused(h[0], w.qkv, w.qkv_bias)               # [T, (n_q + 2 n_kv) hd]
        nqk = (self.n_q + self.n_kv) * hd
        qk = qkv[:, :nqk].view(T, self.n_q + self.n_kv, hd)
        qk = rotate(qk, rope)
        K.index_copy_(2, at, qk[:, self.n_q:].transpose(0, 1)[None])
        V.index_copy_(2, at, qkv[:, nqk:].view(T, self.n_kv, hd).transpose(0, 1)[None])
        if end is not None:
            K, V = K[:, :, :end], V[:, :, :end]
        q = qk[:, :self.n_q].transpose(0, 1)[None]
        o = F.scaled_dot_product_attention(q, K, V, attn_mask=mask, is_causal=mask is None and T > 1,
                                           scale=self.scale, enable_gqa=self.n_kv != self.n_q)
        x = x + self.own(o[0].transpose(0, 1).reshape(T, -1), w.o, w.o_bias)
        h = norm(w.norm2, x)
        gate, up = self.fused(h[0], w.gate_up, w.gate_up_bias).split(self.ff, dim=-1)
        return x + self.own(w.act(gate).mul_(up), w.down, w.down_bias)

    def rope_tables(self, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [1, T, hd] as [T, 1, hd], the sine's first half negated: rotate_half(x) * sin is
        then x with its halves swapped times that sine (-a * s == a * -s exactly)."""
        half = self.head_dim // 2
        sin = sin[0, :, None].clone()
        sin[..., :half].neg_()
        return cos[0, :, None], sin

    def lm_head(self, y: torch.Tensor) -> torch.Tensor:
        return self.fused(y, self.head, self.head_bias)


def rotate(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """RoPE on x [T, heads, hd] with ``Packed.rope_tables``: x * cos + rotate_half(x) * sin, in three ops."""
    cos, sin = rope
    half = x.shape[-1] // 2
    rot = x.unflatten(-1, (2, half)).flip(-2).flatten(-2).mul_(sin)     # rotate_half(x) * sin
    return torch.mul(x, cos).add_(rot)


def norm(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Llama RMSNorm: the fused kernel at float32 (bitwise transformers' math there), else the module."""
    if x.dtype == torch.float32:
        return torch.rms_norm(x, module.weight.shape, module.weight, module.variance_epsilon)
    return module(x)


class Cpu(Modules):
    """Short blocks on the packed weights: one lean call per layer where the layer is plain Llama, else the
    modules with the packed products; a greedy verification's head row by row up to its first rejection."""

    name = "cpu"

    def __init__(self, runner):
        super().__init__(runner)
        kernel = cpu_kernel.kernel_or_say() if runner.dtype == torch.float32 else None
        self.packed = Packed(runner.layers, runner.lm_head, kernel=kernel)
        # on a CPU a greedy verification needs logits only up to its first rejected draft, usually the first
        # or second row, while the head of the whole block costs more than that: 2-5 one-row products for 2-9
        # rows with MKL's matrix-matrix kernel on an AMD EPYC, about 1.2-2 with the engine's own kernel
        self.rows_head = not runner.spread
        # rows per head product: two with the engine's own kernel (a second row costs little there, and each
        # row's sums are the same alone or in a block), else one
        self.head_block = 2 if kernel is not None else 1

    def lean(self, T: int) -> bool:
        """Whether a block of T tokens runs the packed one-call layer (Packed.layer)."""
        return self.packed.lean and T <= self.packed.max_tokens

    def rope(self, cos: torch.Tensor, sin: torch.Tensor, T: int):
        return self.packed.rope_tables(cos, sin) if self.lean(T) else None

    def layer(self, i: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, at: torch.Tensor,
              mask: torch.Tensor | None = None, end: int | None = None, rope=None) -> torch.Tensor:
        T = x.shape[1]
        if self.lean(T):
            K, V = self.r.cache.view(i)
            return self.packed.layer(i, x, rope or self.packed.rope_tables(cos, sin), at, mask, K, V, end)
        pk = self.packed if T <= self.packed.max_tokens else None
        return module_layer(self.r, i, x, cos, sin, at, mask, end, pk)

    def head(self, y: torch.Tensor) -> torch.Tensor:
        """The packed head for short blocks, the module's for longer ones."""
        return self.packed.lm_head(y) if y.shape[1] <= self.packed.max_tokens else self.r.lm_head(y)

    def verify_logits(self, y: torch.Tensor, drafted: list[int] | None) -> torch.Tensor:
        """Greedy (``drafted`` given, not empty): the logits up to the first draft the full model rejects, in
        blocks of ``head_block`` rows. Each row comes out bitwise as a plain step's (the engine's kernel sums
        each row alone), so the argmax is the same."""
        if not drafted or not self.rows_head:
            return super().verify_logits(y, drafted)
        return logits_until_rejected(self.head_row, y, drafted, self.head_block)

    def head_row(self, y: torch.Tensor) -> torch.Tensor:
        """Logits [b, V] of b final-normed states [b, d] (a short block's packed product)."""
        return self.head(y[None])[0]


def logits_until_rejected(head_row, y: torch.Tensor, drafted: list[int], block: int) -> torch.Tensor:
    """``head_row`` over the rows of y [k + 1, d], ``block`` rows at a time, stopping after the block that holds
    the first row whose argmax is not its draft (or the last row)."""
    out = []
    for i in range(0, len(drafted) + 1, block):
        out.append(head_row(y[i:i + block]))
        for r, best in enumerate(out[-1].argmax(-1).tolist(), i):
            if r == len(drafted) or best != drafted[r]:
                return torch.cat(out)
    return torch.cat(out)


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

"""Layer-wise forward over a preallocated KV cache, with a skip set.

The model's own modules (projections, norms, MLP, rotary embedding, ``apply_rotary_pos_emb``)
do the math; this file only decides which layers run, where K/V go (kvcache.py) and who may
attend to whom. How a layer runs (the modules, a CPU's packed weights, static buffers with CUDA
graphs) is the backend's, chosen once here (backends/). Every decoder-layer call goes through one
function, ``layer_step``: the forward, the layer DP's candidates and the static path.
"""
from __future__ import annotations

import sys

import torch

from . import backends
from .kvcache import KVCache


class Runner:
    def __init__(self, model: torch.nn.Module, capacity: int = 0, static: bool | None = None):
        """static: run short blocks (decode, draft, verify) on the static-shape path, with per-layer
        CUDA graphs on a GPU. None = on when the model is on CUDA (CLASP_CUDA_GRAPHS=0 turns it off)."""
        cfg = model.config
        core = model.model
        self.config = cfg
        self.embed = core.embed_tokens
        self.layers = list(core.layers)
        self.norm = core.norm
        self.rotary = core.rotary_emb
        self.lm_head = model.lm_head
        self.apply_rope = sys.modules[type(self.layers[0]).__module__].apply_rotary_pos_emb
        self.num_layers = len(self.layers)
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.hidden = cfg.hidden_size
        p = self.embed.weight
        self.device, self.dtype = p.device, p.dtype
        self.layer_devices = [layer_device(l, self.device) for l in self.layers]
        self.spread = len(set(self.layer_devices)) > 1      # split over GPUs by an accelerate device_map
        self.cache = KVCache(self.n_kv, self.head_dim, self.dtype, self.layer_devices)
        # the DP's attention over the whole cache (padded keys, masked) so its shapes do not change
        # every round: one attention plan per candidate count on a GPU (cuDNN builds one per shape)
        self.dp_fixed = self.device.type == "cuda"
        self.backend = backends.choose(self, model, static)
        if capacity:
            self.allocate(capacity)

    # ---- cache -------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.cache.capacity

    @property
    def length(self) -> int:
        """Number of valid (verified, full-model) cache slots."""
        return self.cache.length

    @length.setter
    def length(self, n: int) -> None:
        self.cache.length = n

    def allocate(self, capacity: int) -> None:
        """Make room for ``capacity`` positions (empties the cache); reuses the buffers when big enough."""
        if self.cache.allocate(self.backend.room(capacity)):
            self.backend.allocated()

    def prepare(self, max_tokens: int) -> float:
        """Capture the CUDA graphs for blocks of up to max_tokens now, outside any timed run.

        Returns the seconds this call spent capturing (0 where graphs are not used or are
        already captured); ``capture_s`` is the total so far, lazy captures included."""
        return self.backend.prepare(max_tokens)

    @property
    def static(self) -> bool:
        """Whether short blocks run on static buffers (backends/cuda_static.py)."""
        return isinstance(self.backend, backends.CudaStatic)

    @property
    def packed(self):
        """The CPU backend's packed weights (backends/cpu.py), else None."""
        return self.backend.packed

    @property
    def fast(self):
        """The static backend's buffers and graphs (backends/cuda_static.py), else None."""
        return self.backend.steps

    @property
    def capture_s(self) -> float:
        """Seconds spent capturing graphs; 0 where none run (off CUDA, or after a failed capture)."""
        return self.fast.capture_s if self.graphs else 0.0

    @property
    def graphs(self) -> int:
        """How many per-layer CUDA graphs are captured and in use (0 off CUDA or after a failed capture)."""
        return len(self.fast.graphs) if self.fast is not None and self.fast.use_graphs else 0

    @property
    def capture_failed(self) -> str | None:
        """Why graph capture failed (None: it did not, or graphs were never tried)."""
        return self.fast.failed if self.fast is not None else None

    def rollback(self, length: int) -> None:
        """Forget every slot from ``length`` on (free: nothing is copied)."""
        self.cache.rollback(length)

    # ---- forward -----------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, start: int, skip=frozenset(), *, hidden: bool = False,
                last_only: bool = False, head: bool = True):
        """Run tokens ``ids`` (1-D) at positions start.. through every layer not in ``skip``.

        Writes K/V of executed layers at those positions and sets the valid length to their
        end. Returns logits ([T, V], or [1, V] with ``last_only``) and, with ``hidden``, the raw
        per-layer outputs x_0..x_L as one [L+1, T, d] tensor ([L+1, 1, d] with ``last_only``; x_0 =
        embeddings; before the final norm; a skipped layer's entry repeats its input).
        ``head=False``: the final-normed states [T, d] instead of logits, for ``verify_logits``.
        """
        T = ids.shape[0]
        end = start + T
        if end > self.capacity:
            raise ValueError(f"context of {end} tokens exceeds the cache ({self.capacity})")
        block = self.backend.block(ids, start)       # a short block on the backend's static buffers
        x, step = block if block is not None else self.ordinary(ids, start, end)
        keep = (lambda h: h.clone()) if block is not None else (lambda h: h)   # static buffers change in place
        rows = slice(T - 1, T) if last_only else slice(0, T)   # the DP wants the last token's states only
        hs = [keep(x[0, rows])] if hidden else None
        record = (lambda x: hs.append(keep(x[0, rows]))) if hidden else None
        x = self.run_layers(x, step, skip, record=record)
        self.cache.length = end
        y = x[:, rows]
        if self.spread:
            y = y.to(self.norm.weight.device)
            hs = [h.to(self.device) for h in hs] if hidden else hs
        out = self.norm(y)[0] if not head else self.head(self.norm(y))[0]
        return (out, torch.stack(hs)) if hidden else out

    def ordinary(self, ids: torch.Tensor, start: int, end: int):
        """(x, step) of a block on the ordinary path: embeddings, and layer i with the block's rotary and mask."""
        T = ids.shape[0]
        x = self.embed(ids)[None]
        at = torch.arange(start, end, device=x.device)
        cos, sin = self.rotary(x, at[None])
        mask = None                  # one new token sees everything; a prompt from 0: the causal kernel
        if T > 1 and start > 0:      # a block after a prefix: causal within it, the prefix visible
            mask = torch.arange(end, device=x.device)[None, :] <= at[:, None]
        rope = self.backend.rope(cos, sin, T)        # once for all layers

        def step(i: int, x: torch.Tensor) -> torch.Tensor:
            nonlocal cos, sin, at, mask
            if self.spread and x.device != self.layer_devices[i]:
                x, cos, sin, at, mask = move(self.layer_devices[i], x, cos, sin, at, mask)
            return self.layer_step(i, x, cos, sin, at, mask, end, rope)

        return x, step

    def verify_logits(self, y: torch.Tensor, drafted: list[int] | None = None) -> torch.Tensor:
        """A verification's logits from ``forward(head=False)``'s states; ``drafted`` (greedy): the backend may
        stop after the row of the first rejected draft."""
        return self.backend.verify_logits(y, drafted)

    def run_layers(self, x, step, skip=frozenset(), *, start: int = 0, record=None):
        """x through the layers start..L-1 in order, ``x = step(i, x)`` for each layer not in ``skip``.

        The one loop over layers: the ordinary forward, the static-shape/CUDA-graph path (whose
        step replays layer i on its static buffer) and the static search's calibration all run
        through it, so all three skip the same way. ``record(x)``, when given, sees the states
        after every layer, a skipped one included (its entry repeats its input). Returns the last x."""
        for i in range(start, self.num_layers):
            if i not in skip:
                x = step(i, x)
            if record is not None:
                record(x)
        return x

    # ---- one decoder layer -------------------------------------------------------------------
    def layer_step(self, i: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, at: torch.Tensor,
                   mask: torch.Tensor | None = None, end: int | None = None, rope=None) -> torch.Tensor:
        """Decoder layer i on hidden states x [1, T, d] (rotary cos/sin of their positions), by the backend.

        Writes the layer's K/V at cache slots ``at`` ([T]) and attends over slots [0, end) (the
        whole cache with None) under ``mask`` ([T, end] bool, True = may attend; None: one token
        sees every slot, several are a causal block from slot 0). Returns the layer's output.
        ``rope``: the backend's rotary tables (``backend.rope``), when the caller made them once."""
        return self.backend.layer(i, x, cos, sin, at, mask, end, rope)

    def head(self, y: torch.Tensor) -> torch.Tensor:
        """The LM head, by the backend (its packed copy for short blocks on a CPU)."""
        return self.backend.head(y)

    # ---- the DP's packed layer call ----------------------------------------------------
    @torch.inference_mode()
    def layer_candidates(self, i: int, cand: torch.Tensor, p: int) -> torch.Tensor:
        """f_i applied to C candidate hidden states [C, d] in one call.

        Every candidate sits at position ``p`` and attends to the verified prefix [0, p) plus
        itself only — not to slot p (the token's own full-model K/V) and not to the other
        candidates. Their K/V go to scratch slots p+1..p+C, past the valid length p+1, so they
        are never kept: the next write overwrites them.
        """
        C = cand.shape[0]
        lo, hi = p + 1, p + 1 + C
        if hi > self.capacity:
            raise ValueError("cache too small for the layer DP's candidates")
        dev = self.layer_devices[i]
        x = cand[None].to(dev)
        cos, sin = self.rotary(x, torch.full((1, C), p, device=dev))
        end = None if self.dp_fixed else hi              # None: keys over the whole cache
        mask = torch.zeros(C, self.capacity if self.dp_fixed else hi, dtype=torch.bool, device=dev)
        mask[:, :p] = True
        mask[:, lo:hi] = torch.eye(C, dtype=torch.bool, device=dev)
        at = torch.arange(lo, hi, device=dev)
        try:
            out = self.layer_step(i, x, cos, sin, at, mask, end)[0]
        except RuntimeError as e:
            if dev.type != "cuda":
                raise
            out = self.layer_step_math(i, x, cos, sin, at, mask, end, e)[0]
        return out.to(self.device)

    def layer_step_math(self, i, x, cos, sin, at, mask, end, error: Exception) -> torch.Tensor:
        """The DP's layer call again on the math attention backend, after the preferred one (cuDNN on
        recent GPUs) failed on this shape; said once, loudly."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        if not getattr(self, "_dp_math_said", False):
            print(f"!! the layer DP's attention failed on the default SDPA backend ({error}); "
                  f"using the math backend for it", file=sys.stderr, flush=True)
            self._dp_math_said = True
        with sdpa_kernel([SDPBackend.MATH]):
            return self.layer_step(i, x, cos, sin, at, mask, end)


def move(device: torch.device, *tensors):
    return tuple(t if t is None else t.to(device) for t in tensors)


def layer_device(layer: torch.nn.Module, default: torch.device) -> torch.device:
    """The device a layer's weights live on (differs per layer under an accelerate device_map)."""
    for p in layer.parameters():
        return p.device
    return default

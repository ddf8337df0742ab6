"""The KV cache: one K and one V buffer per layer, allocated once and indexed by position.

gpt-fast style. Each buffer is [1, n_kv, capacity, head_dim]; a layer writes its new K/V at
the positions of its tokens (``update``) and attends over a view of the slots before some end.
The valid length is a plain integer: rolling back rejected draft tokens is moving it back, and
slots past it are overwritten before anything reads them (the layer DP uses them as scratch).
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_kv: int, head_dim: int, dtype: torch.dtype, devices: list[torch.device]):
        self.n_kv, self.head_dim, self.dtype = n_kv, head_dim, dtype
        self.devices = devices                  # one per layer (they differ under a device_map)
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.capacity = 0
        self.length = 0                         # number of valid (verified, full-model) slots

    def allocate(self, capacity: int) -> bool:
        """Empty the cache with room for ``capacity`` slots; True when it made new (bigger) buffers."""
        self.length = 0
        if capacity <= self.capacity:
            return False
        shape = (1, self.n_kv, capacity, self.head_dim)
        self.k = [torch.zeros(shape, device=d, dtype=self.dtype) for d in self.devices]
        self.v = [torch.zeros_like(k) for k in self.k]
        self.capacity = capacity
        return True

    def update(self, i: int, at: torch.Tensor, k: torch.Tensor, v: torch.Tensor, end: int | None = None):
        """Write layer i's k, v ([1, n_kv, T, head_dim]) at slots ``at`` ([T]); return its K/V view up to end."""
        self.k[i].index_copy_(2, at, k)
        self.v[i].index_copy_(2, at, v)
        return self.view(i, end)

    def view(self, i: int, end: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer i's K and V over slots [0, end) (the whole buffer with None)."""
        if end is None:
            return self.k[i], self.v[i]
        return self.k[i][:, :, :end], self.v[i][:, :, :end]

    def rollback(self, length: int) -> None:
        """Forget every slot from ``length`` on (free: nothing is copied)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll back to {length}: the cache holds {self.length} slots")
        self.length = length

"""How a decoder layer runs: one backend, chosen once when the Runner is built (``choose``).

- ``modules.py``: the model's own modules (the reference; any device).
- ``cpu.py``: a CPU's short blocks on packed weights, multiplied by the engine's kernel (cpu_kernel.py) or
  by torch; a greedy verification's head up to its first rejection.
- ``cuda_static.py``: short blocks on static buffers with per-layer CUDA graphs (eager on a CPU, for the
  tests), around the layer math of one of the two above.

Every backend offers the same few calls (``modules.Modules``): ``layer``, ``head``, ``verify_logits``,
``rope`` and, for a block on its own buffers, ``room``/``allocated``/``prepare``/``block``. The layer DP's
candidates (``Runner.layer_candidates``) go through the chosen backend's ``layer``; the DP's fixed-shape
path belongs in this folder too, beside these.
"""
from __future__ import annotations

import os

from .cpu import Cpu, want_packed
from .cuda_static import CudaStatic
from .modules import Modules

__all__ = ["Cpu", "CudaStatic", "Modules", "choose"]


def choose(runner, model, static: bool | None = None) -> Modules:
    """The backend of ``runner``: packed CPU weights where a copy fits in a CPU's RAM (``CLASP_CPU_PACKED=0``:
    the modules), wrapped in the static path where asked (None: on CUDA unless ``CLASP_CUDA_GRAPHS=0``; never
    when the layers are spread over several GPUs)."""
    base = Cpu(runner) if want_packed(model, runner.device) else Modules(runner)
    if static is None:
        static = runner.device.type == "cuda" and os.environ.get("CLASP_CUDA_GRAPHS", "1") != "0"
    return CudaStatic(runner, base) if static and not runner.spread else base

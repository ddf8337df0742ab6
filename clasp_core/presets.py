"""The models the app offers in its model field, as data: what to load, what to call it, where it suits.

The embedded SmolLM2-135M runs everywhere (and offline). On a GPU, layer skipping pays on models
deep and wide enough that a draft step saves real time: 7-8B models with 28-32 layers.
"""
from __future__ import annotations

from dataclasses import dataclass

SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"   # the embedded model's real weights (bf16)


@dataclass(frozen=True)
class Preset:
    id: str          # what load_model takes ("default" = the embedded GGUF)
    label: str       # what the dropdown shows
    gpu_only: bool   # too big or too slow to be worth it on a CPU


PRESETS = (
    Preset("default", "SmolLM2-135M-Instruct · embedded GGUF, offline", gpu_only=False),
    Preset(SMOLLM2_HUB, "SmolLM2-135M-Instruct · Hub weights, a quick look", gpu_only=False),
    Preset("meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct · 32 layers (gated: needs HF_TOKEN)",
           gpu_only=True),
    Preset("Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B-Instruct · 28 layers", gpu_only=True),
)


def presets_for(device: str, embedded: bool = True) -> list[Preset]:
    """The presets that suit `device` ("cpu" or "cuda"); the embedded one only where it is installed."""
    on_gpu = device.startswith("cuda")
    return [p for p in PRESETS if (on_gpu or not p.gpu_only) and (embedded or p.id != "default")]

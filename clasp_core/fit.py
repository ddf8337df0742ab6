"""Will it fit? Sizes of a model before it is fetched or loaded, and the room there is for it.

A public app must not start a download that fills the disk, nor a load that the kernel ends by
killing the process (and every visitor's run with it). Both are decided here from numbers that
cost nothing to get: the Hub's file list with sizes, the safetensors headers (8 bytes of length,
then JSON naming each tensor's dtype and shape: a parameter count without reading a weight), free
RAM or free VRAM, free disk. ``Guard`` holds a caller's limits and refuses with the numbers;
``load_model(..., guard=...)`` asks it before fetching and before loading.
"""
from __future__ import annotations

import fnmatch
import json
import math
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

GB = 1e9
# bytes per element of the dtypes a safetensors header may name
ST_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
            "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}


def gb(n: float) -> str:
    """Bytes as GB, with one decimal (two below 1 GB)."""
    return f"{n / GB:.2f} GB" if n < GB else f"{n / GB:.1f} GB"


# ---- sizes -----------------------------------------------------------------------------------
def safetensors_header(path: str | os.PathLike) -> dict:
    """The JSON header of a .safetensors file (tensor name -> dtype, shape, data_offsets)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise ValueError(f"{path} is not a safetensors file (header of {n} bytes)")
        return json.loads(f.read(n))


def parameter_count(directory: str | os.PathLike) -> int:
    """Elements in all the tensors of a model directory's .safetensors files, from their headers only."""
    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{directory} has no .safetensors files to size the model from")
    return sum(math.prod(t["shape"]) for f in files for name, t in safetensors_header(f).items()
               if name != "__metadata__")


def kv_cache_bytes(config, tokens: int, dtype: torch.dtype) -> int:
    """The engine's KV cache (one K and one V per layer, [n_kv, tokens, head_dim]) for ``tokens`` positions."""
    heads = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * n_kv * head_dim * tokens * dtype.itemsize


@dataclass
class Need:
    """What a model takes in memory once loaded and running, in bytes."""
    weights: int
    kv: int = 0
    tokens: int = 0                  # the run length the KV cache is sized for
    copy: int = 0                    # the runner's packed CPU copy of the weights (clasp_core.backends.cpu)

    @property
    def room(self) -> int:
        """Working room beyond weights and cache: activations, the DP's scratch, allocator slack."""
        return max(int(0.1 * self.weights), 256_000_000)

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.copy + self.room

    def describe(self, dtype: torch.dtype) -> str:
        kv = f", KV cache for {self.tokens} tokens {gb(self.kv)}" if self.tokens else ""
        copy = f", packed CPU copy {gb(self.copy)}" if self.copy else ""
        return (f"~{gb(self.total)} in {str(dtype).replace('torch.', '')} (weights {gb(self.weights)}{kv}{copy}, "
                f"working room {gb(self.room)})")


def packed_copy(weights: int, device: torch.device) -> int:
    """The bytes of the CPU runner's second copy of the weights: it makes one when the weights take at
    most a quarter of the RAM (``clasp_core.backends.cpu.want_packed``, the same rule)."""
    if device.type != "cpu" or os.environ.get("CLASP_CPU_PACKED", "1") == "0":
        return 0
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
    return weights if weights <= ram // 4 else 0


def loaded_bytes(model: torch.nn.Module, extra: object = None) -> int:
    """Bytes a loaded model holds: parameters and buffers, plus tensors of ``extra`` (e.g. its runner's
    KV cache and packed weight copies), counted once each."""
    seen, total = set(), 0
    tensors = list(model.parameters()) + list(model.buffers()) + list(_tensors_in(extra, set()))
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def _tensors_in(obj, visited: set, depth: int = 0):
    """Tensors reachable from obj through attributes, lists and dicts (a few levels deep; modules are
    counted by the caller)."""
    if obj is None or depth > 6 or id(obj) in visited:
        return
    visited.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors_in(x, visited, depth + 1)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors_in(x, visited, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
        for x in vars(obj).values():
            yield from _tensors_in(x, visited, depth + 1)


# ---- room ------------------------------------------------------------------------------------
def free_memory(device: torch.device) -> int:
    """Free bytes where the model would live: VRAM of the GPU (of all GPUs under a device_map), else RAM."""
    if device.type == "cuda":
        if os.environ.get("CLASP_DEVICE_MAP"):
            return sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
        return torch.cuda.mem_get_info(device)[0]
    return free_ram()


def free_ram() -> int:
    """Available RAM (what can be allocated without swapping or the OOM killer: MemAvailable)."""
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def free_disk(path: str | os.PathLike) -> int:
    """Free bytes on the disk that holds ``path`` (or would hold it: its nearest existing parent)."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


# ---- the Hub's metadata ----------------------------------------------------------------------
@dataclass
class HubSize:
    """A Hub repo as the loader would fetch it: bytes in all, bytes not yet in the local cache, parameters."""
    total: int
    to_fetch: int
    files: int
    parameters: int | None           # from the Hub's safetensors metadata, when it has it


def matches(name: str, allow: list[str], skip: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in allow) and not any(fnmatch.fnmatch(name, p) for p in skip)


def hub_size(repo_id: str, allow: list[str], skip: list[str], api=None) -> HubSize:
    """Sizes from ``HfApi.model_info(files_metadata=True)``, filtered by the loader's own patterns."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    info = (api or HfApi()).model_info(repo_id, files_metadata=True)
    files = [s for s in (info.siblings or []) if matches(s.rfilename, allow, skip)]
    total = sum(s.size or 0 for s in files)
    cached = sum(s.size or 0 for s in files
                 if isinstance(try_to_load_from_cache(repo_id, s.rfilename, revision=info.sha), str))
    st = getattr(info, "safetensors", None)
    return HubSize(total=total, to_fetch=total - cached, files=len(files),
                   parameters=getattr(st, "total", None) if st else None)


# ---- the guard -------------------------------------------------------------------------------
@dataclass
class Guard:
    """Limits checked before a download and before a load; each refusal is a ValueError with the numbers.

    ``reclaimable`` is memory the caller could free for this model (other models it would evict);
    ``make_room(bytes)`` frees it, called once the model is known to fit and just before it loads."""
    tokens: int = 4096                                   # the longest run: prompt and new tokens
    max_download: float | None = None                    # bytes; None = the free disk only
    download_setting: str = "CLASP_MAX_DOWNLOAD_GB"      # named in the refusal
    reclaimable: Callable[[], int] = lambda: 0
    make_room: Callable[[int], None] = lambda need: None
    # the module's functions, looked up when called (so a test can stand in for them)
    free_memory: Callable[[torch.device], int] = lambda device: free_memory(device)
    free_disk: Callable[[str], int] = lambda path: free_disk(path)
    hub_size: Callable[..., HubSize] = lambda *a, **k: hub_size(*a, **k)

    def before_download(self, repo_id: str, allow: list[str], skip: list[str], cache: str,
                        device: torch.device, dtype: torch.dtype) -> None:
        """Refuse a fetch beyond the cap or the free disk, or of weights that could never fit in memory.

        Offline, or when the Hub cannot be asked, nothing is checked here: nothing will be fetched,
        or the loader reports why not; the memory check before the load still runs."""
        from huggingface_hub import constants
        if constants.HF_HUB_OFFLINE:
            return
        try:
            size = self.hub_size(repo_id, allow, skip)
        except Exception:  # noqa: BLE001 - not found, gated, no network: the loader's own message says it
            return
        if size.to_fetch == 0:
            return
        what = f"{repo_id} is {gb(size.to_fetch)} to download ({size.files} files)"
        if self.max_download is not None and size.to_fetch > self.max_download:
            raise ValueError(f"Not downloaded: {what}, over this app's cap of {gb(self.max_download)} "
                             f"({self.download_setting}). Pick a smaller model.")
        disk = self.free_disk(cache)
        if size.to_fetch > disk:
            raise ValueError(f"Not downloaded: {what}, and the disk of the Hugging Face cache ({cache}) has "
                             f"{gb(disk)} free. Pick a smaller model.")
        if size.parameters:
            self.check_memory(repo_id, Need(weights=size.parameters * dtype.itemsize), device, dtype)

    def before_load(self, name: str, directory: str, config, device: torch.device, dtype: torch.dtype) -> None:
        """Refuse a load that would not fit in free memory; else make the room and return."""
        tokens = min(self.tokens, getattr(config, "max_position_embeddings", None) or self.tokens)
        weights = parameter_count(directory) * dtype.itemsize
        need = Need(weights=weights, kv=kv_cache_bytes(config, tokens, dtype), tokens=tokens,
                    copy=packed_copy(weights, device))
        self.check_memory(name, need, device, dtype)
        self.make_room(need.total)

    def check_memory(self, name: str, need: Need, device: torch.device, dtype: torch.dtype) -> None:
        free = self.free_memory(device)
        spare = self.reclaimable()
        if need.total <= free + spare:
            return
        where = "VRAM" if device.type == "cuda" else "RAM"
        room = f"{gb(free)} of {where} free" + (f" (and {gb(spare)} held by other models it may evict)"
                                               if spare else "")
        hint = ("pick a smaller model" if device.type == "cuda" or dtype.itemsize <= 2 else
                "pick a smaller model, or float16 on a GPU")
        raise ValueError(f"Not loaded: {name} needs {need.describe(dtype)}, and this machine has {room}: {hint}.")

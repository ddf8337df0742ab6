"""The engine's own CPU product for short blocks (kernels/linear.c), built on first use.

``kernel()`` compiles the C source with the machine's C compiler (``$CC``, else ``cc``) for this
CPU (``-march=native``), links it to the OpenMP runtime torch has loaded (so its threads are
torch's own team, not a second one), caches the library under the user cache dir keyed by the
source, the compiler, the CPU and that runtime, loads it with ctypes and checks it against
``F.linear`` before anyone uses it. Anything missing (no compiler, no OpenMP runtime in the
process, not Linux, a failed check) leaves it off with the reason in ``why_off()``, and the engine
multiplies with torch as before. ``CLASP_CPU_KERNEL=0`` turns it off.

It is used for blocks of up to ``MAX_ROWS`` rows of float32 (backends/cpu.py): decode and draft steps,
verifications, the DP's candidates. Longer blocks (a prompt) stay with torch's matrix-matrix kernel.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

from .paths import cache_dir

SOURCE = Path(__file__).parent / "kernels" / "linear.c"
MAX_ROWS = 16
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-std=c11"]

_lock = threading.Lock()
_state: dict = {}


class Kernel:
    """y = x W^T + b for x [..., K] (at most MAX_ROWS rows) and W [N, K], both float32 on the CPU."""

    def __init__(self, lib: ctypes.CDLL, path: Path, omp: str):
        fn = lib.clasp_linear
        fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 4
        fn.restype = None
        self._fn = fn
        self.path, self.omp = path, omp
        self.max_rows = MAX_ROWS

    def __call__(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None,
                 threads: int | None = None) -> torch.Tensor:
        N, K = w.shape
        x2 = x.reshape(-1, K)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        M = x2.shape[0]
        y = torch.empty(M, N, dtype=x.dtype)
        self._fn(x2.data_ptr(), w.data_ptr(), None if b is None else b.data_ptr(), y.data_ptr(),
                 M, N, K, threads or torch.get_num_threads())
        return y.view(*x.shape[:-1], N)


def kernel() -> Kernel | None:
    """The built kernel, or None where it cannot be had here (``why_off`` says why). Built once per process."""
    with _lock:
        if "kernel" not in _state:
            try:
                _state["kernel"], _state["why"] = _build(), None
            except Exception as e:          # any failure means torch's own product, never a broken run
                _state["kernel"], _state["why"] = None, str(e) or type(e).__name__
        return _state["kernel"]


def why_off() -> str | None:
    kernel()
    return _state["why"]


def asked_off() -> bool:
    """Whether ``CLASP_CPU_KERNEL=0`` turned the kernel off by hand."""
    return os.environ.get("CLASP_CPU_KERNEL", "1") == "0"


def kernel_or_say() -> Kernel | None:
    """``kernel()``, saying once on stderr why it is off (unless ``CLASP_CPU_KERNEL=0`` asked for that): the
    engine then runs at torch's speed, which a host should be able to tell from the log."""
    k = kernel()
    if k is None and not _state.get("said") and not asked_off():
        _state["said"] = True
        why = _state.get("why") or "not built"
        print(f"!! the engine's CPU kernel is off ({why}); short blocks use torch's products, slower on a CPU "
              "(README, CPU)", file=sys.stderr, flush=True)
    return k


def engine_note(runner) -> str:
    """A line for a page's status after a run: what the CPU products of ``runner`` ran on, when it was not
    the kernel though the kernel would have served (fp32 short blocks on a CPU) and nobody turned it off
    by hand; else "". A Space without a C compiler then says why its CPU runs slower than the README's."""
    packed = getattr(runner, "packed", None)
    if packed is None or packed.kernel is not None or asked_off():
        return ""
    if getattr(runner, "dtype", None) != torch.float32:
        return ""
    return f"CPU kernel off ({why_off() or 'not built'}): torch's products, slower (README, CPU)"


def _omp_runtime() -> str:
    """The path of the OpenMP runtime torch loaded (libgomp, or Intel's/LLVM's, which speak its ABI)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError as e:
        raise RuntimeError("no /proc/self/maps to find torch's OpenMP runtime in") from e
    paths = [line.split()[-1] for line in maps.splitlines() if line.strip()]
    for name in ("libgomp", "libiomp5", "libomp"):
        for path in paths:
            if f"/{name}" in path and ".so" in path:
                return path
    raise RuntimeError("torch loaded no OpenMP runtime (libgomp, libiomp5 or libomp)")


def _cpu_id() -> str:
    """What -march=native builds for: the CPU's name and features (a cache shared by machines stays safe)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    keep = {l for l in lines if l.startswith(("model name", "flags", "Features", "CPU part"))}
    return "\n".join(sorted(keep)) + platform.machine()


def _build() -> Kernel:
    if asked_off():
        raise RuntimeError("turned off by CLASP_CPU_KERNEL=0")
    if sys.platform != "linux":
        raise RuntimeError(f"built on Linux only (this is {sys.platform})")
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler ({cc}) on PATH")
    omp = _omp_runtime()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), cc, version, _cpu_id(), omp])
                         .encode()).hexdigest()[:16]
    out = cache_dir() / "kernels" / f"linear-{key}.so"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            obj, lib = Path(tmp) / "linear.o", Path(tmp) / "linear.so"
            # compile with OpenMP, link without gcc's own -lgomp: the one runtime is torch's
            for cmd in ([cc, *FLAGS, "-c", str(SOURCE), "-o", str(obj)],
                        [cc, "-shared", str(obj), "-o", str(lib), omp, f"-Wl,-rpath,{Path(omp).parent}"]):
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                if r.returncode != 0:
                    raise RuntimeError(f"building the CPU kernel failed: {' '.join(cmd)}\n{r.stderr.strip()}")
            os.replace(lib, out)           # atomic: another process never loads half a file
    k = Kernel(ctypes.CDLL(str(out)), out, omp)
    _check(k)
    return k


def _check(k: Kernel) -> None:
    """The kernel against F.linear on shapes that exercise every tail (rows, outputs, inputs)."""
    g = torch.Generator().manual_seed(0)
    for M, N, K in ((1, 37, 29), (2, 64, 96), (5, 9, 8), (7, 130, 77)):
        x, w, b = (torch.randn(*s, generator=g) for s in ((M, K), (N, K), (N,)))
        for bias in (None, b):
            got, want = k(x, w, bias), F.linear(x, w, bias)
            if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
                raise RuntimeError(f"the built CPU kernel disagrees with F.linear on {M}x{K} by {N}x{K} "
                                   f"(max |diff| {(got - want).abs().max().item():.2e})")

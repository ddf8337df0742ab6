"""One decode step against its bounds: transformers' step, the engine's, and what the weights allow.

    python -m clasp_core.bench.step --threads 1 --context 100
    python -m clasp_core.bench.step --threads 2 --rows 1,2,4,9,16     # what a block of k rows costs

On the embedded model (or ``--model``), CPU, float32, it times in one process, interleaved:
one HF forward of one token over a DynamicCache, one engine step (vanilla: every layer, one
token), a matrix-vector product over every nn.Linear weight (nn.Linear's [out, in] layout, and
the layout the engine uses for each), and a plain read of as many bytes. The last two are the
tokens/s bounds a decode step can reach with these kernels and with this memory.

With one thread the clock is the thread's CPU time, which a machine shared with other jobs
inflates far less than wall time; with more threads it is wall time. The minimum of the
repetitions is reported.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ..model import load_model
from ..runner import Runner


def _threads_clock(threads: int):
    """Use ``threads`` torch threads; the clock to time them with (a thread's CPU time when it is one)."""
    torch.set_num_threads(threads)
    return time.thread_time if threads == 1 else time.perf_counter


def _linear_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every nn.Linear weight once (a tied LM head and embedding counted once)."""
    return list(dict.fromkeys(mod.weight for mod in model.modules() if isinstance(mod, torch.nn.Linear)))


def step_times(spec: str | None, threads: int, context: int, reps: int) -> dict[str, float]:
    """Milliseconds (minimum over reps) of each thing timed, and the weights' size in MB."""
    from transformers import DynamicCache

    clock = _threads_clock(threads)
    lm = load_model(spec, device="cpu", dtype="float32")
    m = lm.model
    ids = torch.randint(0, m.config.vocab_size, (context + 1,))
    runner = Runner(m)
    runner.allocate(context + 8)
    with torch.inference_mode():
        runner.forward(ids[:context], 0, last_only=True)
        cache = DynamicCache(config=m.config)
        m(ids[None, :context], past_key_values=cache, use_cache=True)
    at = torch.tensor([context])

    @torch.inference_mode()
    def hf():
        m(ids[None, context:], past_key_values=cache, use_cache=True, position_ids=at[None], cache_position=at)
        cache.crop(-1)

    def engine():
        runner.rollback(context)
        runner.forward(ids[context:], context, last_only=True)

    weights = _linear_weights(m)
    nbytes = sum(w.numel() * w.element_size() for w in weights)
    xs = {n: torch.randn(1, n) for n in {w.shape[1] for w in weights}}
    kernel = runner.packed.kernel if runner.packed is not None else None
    # the engine's products: its own kernel on every [out, in] weight where it was built (cpu_kernel.py),
    # else torch's on [in, out] copies where out > in (q|k|v, gate|up, head) and the own weight elsewhere
    laid = [(w.t().contiguous(), True) if kernel is None and w.shape[0] > w.shape[1] else (w, False)
            for w in weights]
    big = torch.ones(nbytes // 4)          # written, so the pages are real (not the shared zero page)

    def matvec_linear():
        for w in weights:
            F.linear(xs[w.shape[1]], w)

    def matvec_engine():
        for w, t in laid:
            if t:
                xs[w.shape[0]] @ w
            elif kernel is not None:
                kernel(xs[w.shape[1]], w)
            else:
                F.linear(xs[w.shape[1]], w)

    runs = {"hf step": hf, "engine step": engine, "matvec [out, in]": matvec_linear,
            "matvec engine layout": matvec_engine, "read the weights": big.sum}
    best = {k: float("inf") for k in runs}
    for _ in range(reps):
        for k, f in runs.items():
            f()
            t0 = clock()
            for _ in range(3):
                f()
            best[k] = min(best[k], (clock() - t0) / 3 * 1e3)
    best["MB"] = nbytes / 1e6
    return best


def block_times(spec: str | None, threads: int, rows: list[int], reps: int) -> list[dict]:
    """Milliseconds for a block of each row count through every nn.Linear weight once (a decode step's
    products for 1 row, a verification's for k+1): torch's F.linear, and the engine's own kernel."""
    from .. import cpu_kernel

    clock = _threads_clock(threads)
    weights = _linear_weights(load_model(spec, device="cpu", dtype="float32").model)
    kernel = cpu_kernel.kernel()
    out = []
    for M in rows:
        xs = {n: torch.randn(M, n) for n in {w.shape[1] for w in weights}}
        runs = {"torch": lambda xs=xs: [F.linear(xs[w.shape[1]], w) for w in weights]}
        if kernel is not None:
            runs["own kernel"] = lambda xs=xs: [kernel(xs[w.shape[1]], w) for w in weights]
        row = {"rows": M}
        for name, f in runs.items():
            f()
            best = float("inf")
            for _ in range(reps):
                t0 = clock()
                f()
                best = min(best, clock() - t0)
            row[name] = best * 1e3
        out.append(row)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="clasp_core.bench.step", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="local dir, HF-cache id or .gguf (default: embedded SmolLM2)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--context", type=int, default=100, help="tokens in the cache before the timed step")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--rows", help="instead: the products of blocks of these row counts (e.g. 1,2,4,9,16), "
                                   "torch's against the engine's own kernel")
    a = ap.parse_args(argv)
    if a.rows:
        table = block_times(a.model, a.threads, [int(r) for r in a.rows.split(",")], a.reps)
        names = [k for k in table[0] if k != "rows"]
        print(f"CPU float32, {a.threads} thread(s): every nn.Linear weight once, for a block of this many rows; "
              "ms (x one row)")
        print(f"{'rows':>5s} " + " ".join(f"{n:>18s}" for n in names))
        for r in table:
            print(f"{r['rows']:5d} " + " ".join(f"{r[n]:9.1f} ({r[n] / table[0][n]:4.2f}x)" for n in names))
        return 0
    b = step_times(a.model, a.threads, a.context, a.reps)
    mb = b.pop("MB")
    clock = "thread CPU time" if a.threads == 1 else "wall time"
    print(f"CPU float32, {a.threads} thread(s), {clock}, {a.context} tokens in the cache, {mb:.0f} MB of weights")
    print(f"{'':22s} {'ms':>7s} {'per s':>7s} {'x hf':>6s} {'GB/s':>6s}")
    for k, ms in b.items():
        print(f"{k:22s} {ms:7.1f} {1e3 / ms:7.1f} {b['hf step'] / ms:6.2f} {mb / ms:6.1f}")
    for bound in ("matvec engine layout", "read the weights"):
        print(f"engine step reaches {b[bound] / b['engine step']:.0%} of the {bound} bound")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

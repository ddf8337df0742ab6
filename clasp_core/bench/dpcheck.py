"""One layer DP, measured two ways on one Runner: the eager DP and the fixed-shape (graphed) DP.

The eager DP is ``layer_dp.choose_skip_set``. The fixed-shape one is looked up by name,
``dp_static.choose_fixed_shape(runner, xs, p, M) -> DPResult`` (graphed on CUDA), so this check runs on an
engine with or without it ("not available" where it is missing). For each: wall ms (median), GPU ms
(CUDA events around the call on a GPU; the wall on a CPU), the kernels the profiler sees (on a
CPU: "n/a", and the count of profiled ops instead), the DP in full single-token steps, and
whether the two give the same D table and skip flags.
"""
from __future__ import annotations

import time
from statistics import median

import torch

from .. import dp_static, layer_dp
from ..metrics import default_num_skip
from .common import md_table, sync

STATIC = "choose_fixed_shape"


def static_dp():
    """The fixed-shape DP where this engine has one, else None."""
    return getattr(dp_static, STATIC, None)


def profiled(fn, device: torch.device) -> dict:
    """What the profiler sees of one fn(): CUDA kernels and their busy time on a GPU, ops on a CPU."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        fn()
        sync(device)
    events = prof.key_averages()
    if not cuda:
        return dict(kernels="n/a", cpu_ops=sum(e.count for e in events))
    gpu = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    busy = sum(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0) for e in gpu)
    return dict(kernels=sum(e.count for e in gpu), gpu_busy_ms=busy / 1e3)


def cost(fn, runner, xs: torch.Tensor, p: int, M: int, reps: int):
    """(the DP's result, its costs): one warm-up call (a graphed DP captures there), then ``reps`` timed."""
    device = runner.device

    def once():
        runner.length = p + 1                 # the DP reads the prefix [0, p]; its scratch is past it
        return fn(runner, xs, p, M)

    res = once()
    walls, gpus = [], []
    for _ in range(reps):
        sync(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        once()
        if device.type == "cuda":
            end.record()
        sync(device)
        walls.append((time.perf_counter() - t0) * 1e3)
        gpus.append(start.elapsed_time(end) if device.type == "cuda" else walls[-1])
    out = dict(wall_ms=median(walls), gpu_ms=median(gpus),
               gpu_ms_is="CUDA events" if device.type == "cuda" else "the wall (CPU)")
    out.update(profiled(once, device))
    return res, out


def same(a: layer_dp.DPResult, b: layer_dp.DPResult) -> dict:
    """Whether two DP runs agree: the flags and the skip set exactly, D up to the largest difference."""
    diffs = [abs(x - y) for ra, rb in zip(a.D, b.D) for x, y in zip(ra, rb) if x is not None and y is not None]
    holes = [[x is None for x in r] for r in a.D] == [[y is None for y in r] for r in b.D]
    return dict(flags_equal=a.flags == b.flags, skip_equal=a.skip == b.skip, D_cells_equal=holes,
                D_max_abs=max(diffs, default=0.0))


def full_step_ms(runner, p: int, reps: int) -> float:
    """One single-token step of the full model (graphed where the Runner graphs), median ms."""
    tok = torch.zeros(1, dtype=torch.long, device=runner.device)

    def step():
        runner.length = p + 1
        runner.forward(tok, p + 1, last_only=True)

    step()
    times = []
    for _ in range(reps):
        sync(runner.device)
        t0 = time.perf_counter()
        step()
        sync(runner.device)
        times.append((time.perf_counter() - t0) * 1e3)
    return median(times)


def check(runner, xs: torch.Tensor, p: int, reps: int, M: int | None = None) -> dict:
    """Eager against fixed-shape DP on the states ``xs`` [L+1, d] of the token at position ``p``."""
    L = runner.num_layers
    M = default_num_skip(L) if M is None else M
    step = full_step_ms(runner, p, reps)
    eager_res, eager = cost(layer_dp.choose_skip_set, runner, xs, p, M, reps)
    out = dict(L=L, M=M, position=p, graphs=runner.graphs, full_step_ms=step,
               eager=dict(eager, steps=eager["wall_ms"] / step))
    fn = static_dp()
    if fn is None:
        out["static"] = f"not available (no dp_static.{STATIC} in this engine)"
        return out
    static_res, static = cost(fn, runner, xs, p, M, reps)
    out["static"] = dict(static, steps=static["wall_ms"] / step)
    out.update(same(eager_res, static_res))
    return out


def on_prompt(runner, ids: torch.Tensor, reps: int, M: int | None = None) -> dict:
    """``check`` on the last token of a prompt, prefilled into a cache with room for the DP's scratch."""
    n = len(ids)
    runner.allocate(n + runner.num_layers + 64)
    runner.prepare(1)
    _, hs = runner.forward(ids, 0, hidden=True, last_only=True)
    return check(runner, hs[:, -1], n - 1, reps, M)


def table(results: dict) -> str:
    """One row per (target, DP)."""
    head = ["on", "DP", "wall ms", "GPU ms", "kernels", "full steps", "D/flags equal"]
    rows = []
    for name, r in results.items():
        if not isinstance(r, dict) or "eager" not in r:
            continue
        for kind in ("eager", "static"):
            c = r[kind]
            if isinstance(c, str):
                rows.append([name, kind, c, "-", "-", "-", "-"])
                continue
            kernels = (f"n/a ({c['cpu_ops']} ops)" if c["kernels"] == "n/a"
                       else f"{c['kernels']} (busy {c['gpu_busy_ms']:.2f} ms)")
            equal = "-" if kind == "eager" else (
                f"{'yes' if r['flags_equal'] and r['skip_equal'] else 'NO'} (D max abs {r['D_max_abs']:.2g})")
            rows.append([f"{name} (L={r['L']}, M={r['M']}, step {r['full_step_ms']:.2f} ms)", kind,
                         f"{c['wall_ms']:.2f}", f"{c['gpu_ms']:.2f}", kernels, f"{c['steps']:.2f}", equal])
    return md_table(head, rows)

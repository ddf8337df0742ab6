"""The thread micro-benchmark: one ``F.linear`` of 1x576 by 576x1536 (a SmolLM2 MLP projection), timed in a
fresh process per row: on the main thread, in a second thread after the main thread ran torch, in a new
thread after a loading thread ran torch (the app before its engine thread), and in the app's engine thread,
there also by the engine's own CPU kernel (the product the engine uses for such a block).

    python -m ui.bench.micro [--repeat 2]          # also: python -m ui.bench.page --micro
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MICRO = ("main", "second-thread", "after-load-thread", "app-engine", "app-engine, own kernel")


def linear_us(reps: int = 5000, own: bool = False) -> tuple[float, float]:
    """Microseconds per F.linear(1x576, 576x1536) in the calling thread, and CPU cores busy meanwhile;
    ``own``: the same product by the engine's own CPU kernel (clasp_core/cpu_kernel.py) instead."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    x, w = torch.randn(1, 576), torch.randn(1536, 576)
    product = F.linear
    if own:
        from clasp_core import cpu_kernel

        product = cpu_kernel.kernel()
        if product is None:
            raise SystemExit(f"micro: no CPU kernel here ({cpu_kernel.why_off()})")
    for _ in range(200):
        product(x, w)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reps):
        product(x, w)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return 1e6 * wall / reps, cpu / wall


def in_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def micro(where: str) -> tuple[float, float]:
    """The microbenchmark where the app (or a plain script) would run it; `where` is one of MICRO."""
    import torch

    if where == "main":
        return linear_us()
    if where == "second-thread":
        torch.ones(256, 256) @ torch.ones(256, 256)               # the main thread has used torch
        return in_thread(linear_us)
    if where == "after-load-thread":                              # the app before: load, then a thread per run
        from clasp_core.decoding import GenConfig, generate
        from clasp_core.model import load_model

        in_thread(lambda: list(generate(load_model("default", device="cpu"), "Hi.", GenConfig(max_new_tokens=4),
                                        "vanilla")))
        return in_thread(linear_us)
    if where.startswith("app-engine"):                            # the app now: its engine thread
        from ui.serving.engine import ENGINE
        from ui.serving.handlers import APP

        APP.models.device = "cpu"
        APP.models.load("default")
        return ENGINE.call(lambda: linear_us(own=where.endswith("own kernel")))
    raise ValueError(f"unknown place {where!r}; use one of {', '.join(MICRO)}")


def micro_table(repeat: int) -> list[dict]:
    rows = []
    print(f"{'where F.linear 1x576 by 576x1536 runs (5000 reps)':<52} {'us / call':>9} {'cores busy':>10}")
    for where in MICRO:
        runs = []
        for _ in range(repeat):                                   # a fresh process each time
            out = subprocess.run([sys.executable, "-m", "ui.bench.micro", "--in", where], cwd=ROOT,
                                 check=True, capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        best = min(runs, key=lambda r: r["us"])
        rows.append(dict(where=where, **best))
        print(f"{where:<52} {best['us']:9.1f} {best['cores']:10.2f}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2, help="fresh processes per row; the fastest is kept")
    ap.add_argument("--out", help="also write the rows as JSON lines here")
    ap.add_argument("--in", dest="where", choices=MICRO, help=argparse.SUPPRESS)    # the child: one row
    a = ap.parse_args(argv)
    if a.where:
        us, cores = micro(a.where)
        print(json.dumps(dict(us=us, cores=cores)))
        return 0
    rows = micro_table(a.repeat)
    if a.out:
        Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Page overhead: what a visitor waits for through the app, against the engine's own wall time.

    python -m ui.page_bench [--runs fixed,defaults] [--prompt TEXT] [--max-new-tokens 96]

Starts ``app.py`` in its own process on a free local port, warms the model up with one short run,
then drives each run through the app's API with gradio_client (what the page does): the clock runs
from submit to the last update. The engine's time is read from the run's own trace (CLaSp + vanilla
``Done.wall_s``). The goal is a ratio of at most 1.2 while tokens still stream live.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from clasp_core import trace

ROOT = Path(__file__).resolve().parents[1]
TRANSLATION = ("Translate German to English: Pfandhäuser boomen in Singapur , da die Krise in der "
               "Mittelschicht angekommen ist")
# the two runs of issue 9: fixed CLaSp settings, and the page's own defaults (auto on)
RUNS = {
    "fixed": dict(num_skip=14, draft_len=8, det=0.7, loi=1, auto=False),
    "defaults": dict(num_skip=14, draft_len=8, det=0.7, loi=1, auto=True),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), *extra], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"page_bench: app.py exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("page_bench: the app did not start within 180 s")


def trace_path(outputs) -> str | None:
    """The run's trace file among the final outputs (a path ending in .jsonl)."""
    for o in outputs:
        p = o.get("path") if isinstance(o, dict) else o
        if isinstance(p, str) and p.endswith(".jsonl") and os.path.isfile(p):
            return p
    return None


def drive(client, prompt: str, settings: dict, max_new: int) -> dict:
    """One run through the app's API: submit -> last update, updates seen, engine seconds from the trace."""
    args = dict(prompt=prompt, max_new_tokens=max_new, temperature=0.0, top_p=1.0, seed=0, **settings)
    t0 = time.perf_counter()
    job = client.submit(api_name="/run", **args)
    updates, first = 0, None
    for _ in job:                      # each streamed snapshot
        updates += 1
        if first is None:
            first = time.perf_counter() - t0
    final = job.outputs()[-1] if job.outputs() else job.result()
    page_s = time.perf_counter() - t0
    path = trace_path(final)
    if path is None:
        raise SystemExit(f"page_bench: the run returned no trace ({str(final)[:300]})")
    done = [e for e in trace.read_trace(path) if isinstance(e, trace.Done)]
    engine_s = sum(d.wall_s for d in done)
    tokens = {d.method: d.new_tokens for d in done}
    return dict(page_s=page_s, engine_s=engine_s, ratio=page_s / engine_s, updates=updates,
                updates_per_s=updates / page_s, first_update_s=first, tokens=tokens)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="fixed,defaults", help=f"comma list of {', '.join(RUNS)}")
    ap.add_argument("--prompt", default=TRANSLATION)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--app-args", default="", help="extra arguments for app.py, e.g. '--device cpu'")
    ap.add_argument("--out", help="also write the rows as JSON lines here")
    a = ap.parse_args(argv)
    from gradio_client import Client

    port = free_port()
    proc = start_app(port, a.app_args.split())
    rows = []
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        drive(client, "Hi.", RUNS["fixed"], 8)                  # loads and warms the model
        print(f"{'run':<10} {'page s':>8} {'engine s':>9} {'ratio':>6} {'updates':>8} {'upd/s':>6} "
              f"{'first s':>8}  tokens")
        for name in a.runs.split(","):
            r = dict(run=name, **drive(client, a.prompt, RUNS[name], a.max_new_tokens))
            rows.append(r)
            print(f"{name:<10} {r['page_s']:8.1f} {r['engine_s']:9.1f} {r['ratio']:5.2f}x {r['updates']:8d} "
                  f"{r['updates_per_s']:6.1f} {r['first_update_s']:8.2f}  {r['tokens']}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if a.out:
        Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Page overhead: what a visitor waits for through the app, against the engine alone.

    python -m ui.bench.page [--runs fixed,defaults] [--prompt TEXT] [--max-new-tokens 96] [--repeat 5]
    python -m ui.bench.page --micro            # the thread micro-benchmark instead (ui.bench.micro)

The engine alone: a fresh Python process loads the model and warms it up as the app does, then
decodes CLaSp and then vanilla with ``generate()`` on its main thread; the clock runs around the two
decodes. The page: ``app.py`` in its own process on a free local port, warmed up with one short run,
driven through its API with gradio_client (what the page does); the clock runs from submit to the
last update, and the wait does not spin (a browser waits on its socket). The two take ``--repeat``
turns, each the engine alone and then the page, back to back, with the app paused while the engine
runs alone: this machine's speed drifts by several percent from one minute to the next, so the
turn's own ratio is the steadier figure (its median is printed), beside the ratio of each side's
fastest run. The goal is a ratio page / alone of at most 1.1. The engine's own clock inside the page
(``Done.wall_s`` of the run's trace) is printed beside them: it shows whether the engine itself ran
slower in the app. ``--browser`` drives the page in headless Chromium instead (ui.bench.browser).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from clasp_core import trace
from ui.bench import micro
from ui.bench.browser import chromium, set_number, wait_for

ROOT = Path(__file__).resolve().parents[2]
# Spec-Bench question 161 (translation), shipped in clasp_core/bench/data/spec_bench_dev.jsonl
TRANSLATION = ("Translate German to English: Pfandhäuser boomen in Singapur , da die Krise in der "
               "Mittelschicht angekommen ist")
# the two runs: fixed CLaSp settings, and the page's own defaults (auto on)
RUNS = {
    "fixed": dict(num_skip=14, draft_len=8, det=0.7, loi=1, auto=False),
    "defaults": dict(num_skip=14, draft_len=8, det=0.7, loi=1, auto=True),
}
WARM = dict(prompt="Hi.", settings=RUNS["fixed"], max_new=8)      # the short run both sides start with
POLL_S = 0.02              # how often drive() looks for the first update while it waits for the last


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the engine alone, on the main thread of a fresh process ---------------------------------
class Alone:
    """The engine alone: a fresh interpreter (this module's --alone-serve) that loads the model and warms it
    up as the app does, then times each decode pair it is sent on its main thread, between turns of the
    page, so that both sides of a turn run within seconds of each other."""

    def __init__(self, model: str | None):
        self.proc = subprocess.Popen([sys.executable, "-m", "ui.bench.page", "--alone-serve", model or "default"],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, prompt: str, settings: dict, max_new: int) -> dict:
        self.proc.stdin.write(json.dumps(dict(prompt=prompt, settings=settings, max_new=max_new)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"page_bench: the engine-alone process exited ({self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve_alone(model: str) -> None:
    """The child: load and warm up as the app does, then for each job on stdin print its seconds."""
    from clasp_core.model import load_model
    from ui.serving.models import warm_up

    lm = load_model(model, device="auto")
    warm_up(lm)                                                   # the app's warm-up
    decode_both(lm, WARM["prompt"], WARM["settings"], WARM["max_new"])   # page_bench's warm-up run
    out = sys.stdout
    sys.stdout = sys.stderr                                       # only the results on the pipe
    for line in sys.stdin:
        job = json.loads(line)
        t0 = time.perf_counter()
        done = decode_both(lm, job["prompt"], job["settings"], job["max_new"])
        seconds = time.perf_counter() - t0
        out.write(json.dumps(dict(alone_s=seconds, alone_tokens={d.method: d.new_tokens for d in done})) + "\n")
        out.flush()


def decode_both(lm, prompt: str, settings: dict, max_new: int) -> list:
    from clasp_core.decoding import GenConfig, generate

    cfg = GenConfig(max_new_tokens=max_new, temperature=0.0, top_p=1.0, seed=0, **settings)
    return [list(generate(lm, prompt, cfg, method))[-1] for method in ("clasp", "vanilla")]


# ---- the page, through gradio_client -----------------------------------------------------------
def start_app(port: int, extra: list[str], app_dir: Path = ROOT) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(app_dir / "app.py"), "--port", str(port), *extra], cwd=app_dir,
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
        p = o.get("path") if isinstance(o, dict) else getattr(o, "path", o)
        if isinstance(p, str) and p.endswith(".jsonl") and os.path.isfile(p):
            return p
    return None


def drive(client, prompt: str, settings: dict, max_new: int) -> dict:
    """One run through the app's API: submit -> last update, updates seen, engine seconds from the trace."""
    args = dict(prompt=prompt, max_new_tokens=max_new, temperature=0.0, top_p=1.0, seed=0, **settings)
    t0 = time.perf_counter()
    job = client.submit(api_name="/run", **args)
    first = None
    # Wait as a browser does, without spinning: iterating a Job (``for update in job``) polls every 1 ms,
    # which on a 2-core machine took 0.16-0.24 s of CPU per run from the engine and added 0.3-0.4 s to
    # the page's time. Here the wait ends the moment the job does; the first update is seen within 20 ms.
    while first is None and not concurrent.futures.wait([job], timeout=POLL_S).done:
        if job.outputs():
            first = time.perf_counter() - t0
    concurrent.futures.wait([job])
    page_s = time.perf_counter() - t0
    result = job.result()              # raises here if the run failed
    updates = len(job.outputs())
    first = page_s if first is None else first
    final = job.outputs()[-1] if job.outputs() else result
    path = trace_path(final)
    if path is None:
        raise SystemExit(f"page_bench: the run returned no trace ({str(final)[:300]})")
    return page_row(page_s, path, updates, first)


def page_row(page_s: float, trace_file: str, updates: int, first_s: float, **extra) -> dict:
    """One run through the page: its seconds and updates, and from its trace the engine's own seconds and
    the tokens each method emitted."""
    done = [e for e in trace.read_trace(trace_file) if isinstance(e, trace.Done)]
    return dict(page_s=page_s, engine_s=sum(d.wall_s for d in done), updates=updates,
                updates_per_s=updates / page_s, first_update_s=first_s,
                tokens={d.method: d.new_tokens for d in done}, **extra)


# ---- the table ----------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="fixed,defaults", help=f"comma list of {', '.join(RUNS)}")
    ap.add_argument("--prompt", default=TRANSLATION)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=5,
                    help="turns (alone, then the page) per run; the minimum of each side is kept")
    ap.add_argument("--model", default=None, help="model for both sides (default: the app's default)")
    ap.add_argument("--app-args", default="", help="extra arguments for app.py, e.g. '--device cpu'")
    ap.add_argument("--app-dir", type=Path, default=ROOT, help="the app to drive (e.g. another checkout)")
    ap.add_argument("--browser", action="store_true",
                    help="drive the page in headless Chromium on this machine instead of gradio_client")
    ap.add_argument("--micro", action="store_true", help="only the F.linear microbenchmark, thread by thread")
    ap.add_argument("--out", help="also write the rows as JSON lines here")
    ap.add_argument("--alone-serve", help=argparse.SUPPRESS)      # the child: the engine alone, for MODEL
    a = ap.parse_args(argv)
    if a.alone_serve:
        serve_alone(a.alone_serve)
        return 0
    if a.micro:
        rows = micro.micro_table(a.repeat)
    else:
        rows = page_table(a)
    if a.out:
        Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


class Browser:
    """The page in Debian's Chromium (headless, on this machine, as a local visitor's browser is): each run
    sets the prompt and the knobs, then one script clicks Run and resolves when the status line reads
    "Done." and the page has painted, on the page's own clock; it counts the token view's updates.
    The engine's seconds and the token counts come from the run's trace, fetched afterwards."""

    KNOBS = {"num_skip": "M —", "draft_len": "K —", "det": "DET —", "loi": "LOI —", "max_new": "max new tokens"}
    TIMED = """
        const done = arguments[arguments.length - 1];
        const status = document.querySelector('#status'), tokens = document.querySelector('#tokens-clasp');
        let updates = 0, first = null, t0 = 0;
        const seen = new MutationObserver(() => { updates += 1; if (first === null) first = performance.now() - t0; });
        seen.observe(tokens, {subtree: true, childList: true, characterData: true});
        let started = false;            // this run's own status has shown (the last run's "Done." stays a while)
        const end = new MutationObserver(() => {
            const text = status.innerText.trim();
            if (text.startsWith('Decoding') || text.startsWith('Loading')) { started = true; return; }
            if (!started || !text.startsWith('Done.')) return;
            end.disconnect();
            requestAnimationFrame(() => requestAnimationFrame(() => {
                seen.disconnect();
                done([performance.now() - t0, updates, first]);
            }));
        });
        end.observe(status, {subtree: true, childList: true, characterData: true});
        t0 = performance.now();
        document.querySelector('#run-btn').click();
    """

    def __init__(self, url: str):
        self.d, self.profile = chromium()
        self.d.set_script_timeout(900)
        self.d.get(url)
        wait_for(lambda: self.d.find_element("id", "run-btn").is_displayed(), "the page")
        for fold in self.d.find_elements("css selector", "button.label-wrap, .label-wrap"):
            if "Replay a trace" in fold.text:            # shows the run's trace link (read after each run)
                fold.click()
                break

    def _set(self, prompt: str, settings: dict, max_new: int) -> None:
        from selenium.webdriver.common.keys import Keys

        d = self.d
        box = d.find_element("css selector", "#prompt textarea")
        if box.get_attribute("value") != prompt:
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(Keys.DELETE)
            box.send_keys(prompt)
            wait_for(lambda: box.get_attribute("value") == prompt, "the prompt", 10)
        auto = d.find_element("css selector", "#controls input[type=checkbox]")
        if auto.is_selected() != bool(settings["auto"]):
            auto.click()
        values = {**settings, "max_new": max_new}
        for knob, label in self.KNOBS.items():
            set_number(d, label, values[knob])
        time.sleep(1.0)                                 # the knobs' own events settle before the clock starts

    def run(self, prompt: str, settings: dict, max_new: int) -> dict:
        import tempfile
        import urllib.request

        self._set(prompt, settings, max_new)
        cpu0 = self._cpu()
        ms, updates, first = self.d.execute_async_script(self.TIMED)
        browser_cpu = self._cpu() - cpu0
        wait_for(lambda: self.d.find_element("css selector", "#trace-download a[href]"), "the trace link", 30)
        link = self.d.find_element("css selector", "#trace-download a[href]").get_attribute("href")
        with urllib.request.urlopen(link) as r, tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as f:
            f.write(r.read())
            f.flush()
            return page_row(ms / 1000, f.name, updates, (first or ms) / 1000, browser_cpu_s=browser_cpu)

    def _cpu(self) -> float:
        """CPU seconds used so far by this browser's processes (those started with its profile folder)."""
        total = 0.0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if self.profile.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                continue
        return total

    def close(self) -> None:
        import shutil

        self.d.quit()
        shutil.rmtree(self.profile, ignore_errors=True)


class ClientSide:
    """The page through gradio_client (no download of the run's trace file: a browser shows its link and
    fetches it only when clicked; no certificate store: the app is plain HTTP on this machine, and
    gradio_client opens a new httpx client per request, which loads the store each time, 44 ms here,
    before the request leaves)."""

    def __init__(self, url: str):
        from gradio_client import Client

        self.client = Client(url, verbose=False, download_files=False, ssl_verify=False)

    def run(self, prompt: str, settings: dict, max_new: int) -> dict:
        return drive(self.client, prompt, settings, max_new)

    def close(self) -> None:
        pass


def page_table(a) -> list[dict]:
    """Each turn times every run twice, alone then through the page, back to back, so that a machine whose
    speed drifts (a shared host) weighs on both sides of a turn alike; the app is paused (SIGSTOP) while
    the engine runs alone, and the engine-alone process waits on its pipe while the page runs."""
    names = a.runs.split(",")
    solo = Alone(a.model)
    port = free_port()
    extra = a.app_args.split() + (["--model", a.model] if a.model else [])
    proc = start_app(port, extra, a.app_dir.resolve())
    alone_runs: dict[str, list] = {name: [] for name in names}
    page_runs: dict[str, list] = {name: [] for name in names}
    rows = []
    side = None
    try:
        side = (Browser if a.browser else ClientSide)(f"http://127.0.0.1:{port}/")
        side.run(WARM["prompt"], WARM["settings"], WARM["max_new"])            # loads and warms the model
        for _ in range(a.repeat):
            for name in names:
                with paused(proc):
                    alone_runs[name].append(solo.run(a.prompt, RUNS[name], a.max_new_tokens))
                page_runs[name].append(side.run(a.prompt, RUNS[name], a.max_new_tokens))
    finally:
        if side is not None:
            side.close()
        proc.terminate()
        proc.wait(timeout=30)
        solo.close()
    print(f"{a.repeat} turns, each alone then the page ({'Chromium' if a.browser else 'gradio_client'}), back to "
          "back; alone = generate() on the main thread of another process; s = the fastest of the turns")
    print(f"{'run':<10} {'alone s':>8} {'page s':>8} {'page/alone':>10} {'median':>7} {'engine s':>9} "
          f"{'updates':>8} {'upd/s':>6} {'first s':>8}  tokens")
    for name in names:
        r = dict(run=name, **min(alone_runs[name], key=lambda x: x["alone_s"]),
                 **min(page_runs[name], key=lambda x: x["page_s"]))
        r["ratio"] = r["page_s"] / r["alone_s"]
        r["ratios"] = [p["page_s"] / q["alone_s"] for q, p in zip(alone_runs[name], page_runs[name])]
        r["median_ratio"] = statistics.median(r["ratios"])
        rows.append(r)
        print(f"{name:<10} {r['alone_s']:8.2f} {r['page_s']:8.2f} {r['ratio']:9.2f}x {r['median_ratio']:6.2f}x "
              f"{r['engine_s']:9.2f} {r['updates']:8d} {r['updates_per_s']:6.1f} {r['first_update_s']:8.2f}  "
              f"{r['tokens']}" + ("" if r["tokens"] == r["alone_tokens"] else f" (alone: {r['alone_tokens']})")
              + (f"  browser CPU {r['browser_cpu_s']:.2f} s" if "browser_cpu_s" in r else ""), flush=True)
    print("page/alone, turn by turn: " + "; ".join(f"{r['run']} " + " ".join(f"{x:.2f}" for x in r["ratios"])
                                                  for r in rows))
    print("median: of the turns' own ratios (each turn's two sides ran within seconds of each other)")
    return rows


@contextlib.contextmanager
def paused(proc: subprocess.Popen):
    """The app stopped (SIGSTOP) for the block: its idle threads take no CPU from the engine alone."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


if __name__ == "__main__":
    raise SystemExit(main())

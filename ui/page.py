"""The page: its controls and views laid out, each event wired to its handler (ui.serving.handlers), and the
queue. ``build`` makes it, ``launch`` serves it with the theme and stylesheet; app.py does both."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import torch

from clasp_core.metrics import default_num_skip, dtype_name
from clasp_core.model import resolve_device, resolve_dtype
from ui.serving import handlers
from ui.serving.app_state import DEFAULT_LAYERS, DEFAULT_SPEC, ON_SPACES
from ui.serving.gradio_private import Page
from ui.serving.handlers import APP, AUTO_INFO, RUN_PARAMS, STEPPED
from ui.serving.live import calm_queue
from ui.serving.models import offered_presets
from ui.views import replay
from ui.views.compare import strategy_choices
from ui.views.knobs import knob
from ui.views.registry import VIEWS, build_tabs, build_top

ASSETS = Path(__file__).resolve().parents[1] / "assets"
EXAMPLES = json.loads((ASSETS / "examples.json").read_text(encoding="utf-8"))
QUEUE_MAX = 16                         # runs waiting beyond this are turned away ("queue full")
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
        top = build_top()                              # the primer (ui.views.primer)
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
                det_off, loi_off, seed_off = handlers.knob_notes(True)
                det = knob("det", info=det_off["info"])
                loi = knob("loi", info=loi_off["info"])
                max_new = knob("max_new_tokens")
                with gr.Accordion("Sampling and model", open=False):
                    temperature = knob("temperature")
                    top_p = knob("top_p")
                    seed = knob("seed", info=seed_off["info"])
                    model = model_field(default_model)
                    dtype = dtype_field()
                gr.Examples(ex_prompts, inputs=[prompt], label="Spec-Bench examples (one per task)",
                            example_labels=[e["task"] for e in EXAMPLES["examples"]])
                with gr.Accordion("Replay a trace", open=False):
                    upload = gr.File(label="trace (.jsonl)", file_types=[".jsonl"], elem_id="trace-upload")
                    download = gr.File(label="this run's trace", interactive=False, elem_id="trace-download")
            with gr.Column(scale=3, elem_id="views"):
                V = build_tabs()
        V.update(top)
        V.update(status=status, download=download, run_state=run_state, num_skip=num_skip, history=history)
        APP.components.clear()
        APP.components.update(V)
        shown = [V[v.name] for v in VIEWS if v.render]
        outputs = shown + [status, download, run_state, num_skip, history]
        # run's parameters are the /run API's names: each takes the field of its name (the settings' by the table's)
        fields = dict(prompt=prompt, model=model, num_skip=num_skip, draft_len=draft_len, det=det, loi=loi,
                      temperature=temperature, top_p=top_p, seed=seed, max_new_tokens=max_new, auto=auto,
                      strategy=strategy, history=history, dtype=dtype)
        inputs = [fields[name] for name in RUN_PARAMS]
        # Gradio's progress (queue position, timer, a pulsing overlay) on the status line only: drawn on every
        # output it cost a local browser, sharing the CPU with the engine, a third more time per run
        progress = dict(show_progress="minimal", show_progress_on=[status])
        run_btn.click(handlers.run, inputs, outputs, api_name="run", **progress)
        prompt.submit(handlers.run, inputs, outputs, api_name=False, **progress)
        V["compare_run_all"].click(handlers.run_all, inputs, outputs, api_name="run_all", **progress)
        picked = [V["compare_pick"] if c is strategy else c for c in inputs]
        V["compare_run_one"].click(handlers.run_source, picked, outputs, api_name=False, **progress)
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
        stop_btn.click(handlers.stop, None, status, api_name="stop", queue=False)
        upload.upload(handlers.load_trace, upload, shown + [status, download, run_state], api_name="replay")
        stepped = [V[name] for name in STEPPED]
        V["step"].release(handlers.step_to, [run_state, V["step"]], stepped, api_name=False)
        V["prev"].click(lambda st, i: handlers.step_to(st, (i or 1) - 1), [run_state, V["step"]], stepped,
                        api_name=False)
        V["next"].click(lambda st, i: handlers.step_to(st, (i or 1) + 1), [run_state, V["step"]], stepped,
                        api_name=False)
        V["dp_choice"].input(handlers.pick_choice, [run_state, V["dp_choice"]], V["dp_table"], api_name=False)
        auto.change(handlers.knob_notes, auto, [det, loi, seed], api_name=False)
        strategy.change(handlers.auto_for_strategy, [strategy, auto], auto, api_name=False)
        demo.load(handlers.page_opened, None, num_skip, api_name=False)
        demo.load(lambda: APP.models.readiness(APP.args.model), None, status, api_name=False)
        demo.unload(handlers.end_session)
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_MAX)
    calm_queue(demo)                   # no 1 ms polling of the queue beside the engine (ui.serving.live)
    APP.models.queued = lambda: handlers.queued_models(demo)    # a load never evicts a model a waiting run asked for
    return demo


# Measured with the bench's methods (clasp_core.bench.methods) on the embedded model, 32 new tokens, one
# thread of a busy 2-core Xeon (Sapphire Rapids), in tokens per CPU-second, bfloat16: transformers' generate
# 13.1, the engine's vanilla 13.4 and CLaSp 5.6 with avx512_bf16; 13.0, 4.2 and 1.8 with torch and oneDNN
# held to AVX2 (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2). The engine's CPU kernel is float32 only.
CPU_HALF = ("float32 only on a CPU: in bfloat16 CLaSp ran at 0.4x transformers' own bfloat16 generate on a Xeon "
            "with avx512_bf16, 0.14x without it (the engine's CPU kernel is float32 only)")
GPU_HALF = ("half precision is faster on a GPU; where two candidates nearly tie, its rounding can part CLaSp from "
            "vanilla (the Timing tab says so)")


def dtype_field(device: str | None = None) -> gr.Dropdown:
    """float32, bfloat16 and float16 on a GPU; float32 alone on a CPU, where half precision is slower (CPU_HALF).
    ``device``: its kind, "cpu" or "cuda" (default: the app's)."""
    device = torch.device(device or resolve_device(APP.models.device).type)
    cpu = device.type == "cpu"
    return gr.Dropdown(["float32"] if cpu else ["float32", "bfloat16", "float16"],
                       value=dtype_name(resolve_dtype("auto", device)), label="dtype", elem_id="dtype",
                       info=CPU_HALF if cpu else GPU_HALF)


def model_field(default_model: str | None) -> gr.Dropdown:
    """The presets that suit this device and the ids the host allows; locally also any local dir, .gguf
    or Hub id typed in (on a Space what is typed is checked against the allow-list on run)."""
    choices = [(p.label, p.id) for p in offered_presets(APP.models.device, ON_SPACES)] + \
        [(m, m) for m in APP.models.policy.extra]
    return gr.Dropdown(choices, value=default_model or DEFAULT_SPEC, label="model", allow_custom_value=True,
                       info=APP.models.policy.info(), elem_id="model")


def launch(demo: gr.Blocks, host: str, port: int, **kwargs) -> None:
    """Serve the page with its theme and stylesheet (``main``, and the tests' one server per session)."""
    demo.launch(server_name=host, server_port=port, theme=gr.themes.Soft(primary_hue="indigo"),
                css_paths=[ASSETS / "style.css"], **kwargs)

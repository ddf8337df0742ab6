"""The app's parts that need no model and no server: its address, model field, ZeroGPU window, model keys,
the visitors' sessions and the run settings' parsing (test_app.py drives the served app on the real model)."""
import gradio as gr
import pytest

from clasp_core.settings import SETTINGS, parse
from clasp_core.trace import Step
from ui.serving.models import model_key
from ui.serving.sessions import Sessions, session_key


def test_address_from_gradio_variables_unless_flags_say(monkeypatch):
    import app

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    assert app.serve_address(app.parse_args([])) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9001")
    assert app.serve_address(app.parse_args([])) == ("0.0.0.0", 9001)
    assert app.serve_address(app.parse_args(["--host", "127.0.0.1", "--port", "8000"])) == ("127.0.0.1", 8000)


def test_model_field_offers_the_device_presets_and_free_text():
    from clasp_core.model import resolve_device
    from clasp_core.presets import presets_for
    from ui.page import model_field

    with gr.Blocks():
        field = model_field(None)
    assert field.allow_custom_value and field.value == "default"
    assert [value for _, value in field.choices] == [p.id for p in presets_for(resolve_device("auto").type)]


def test_the_dtype_field_offers_half_precision_on_a_gpu_only():
    """On a CPU the engine's half precision is slower than transformers' (page.CPU_HALF): float32 alone, and why."""
    from ui.page import dtype_field

    with gr.Blocks():
        cpu, gpu = dtype_field(), dtype_field("cuda")       # the suite runs on a CPU
    assert [v for _, v in cpu.choices] == ["float32"] and cpu.value == "float32" and "0.4x" in cpu.info
    assert [v for _, v in gpu.choices] == ["float32", "bfloat16", "float16"] and gpu.value == "float16"
    assert "Timing tab" in gpu.info


def test_gpu_window_grows_with_max_new_tokens():
    from ui.serving.handlers import GPU_MAX_S, gpu_seconds

    short, long = gpu_seconds(8, loading=False), gpu_seconds(512, loading=False)
    assert 0 < short < long <= GPU_MAX_S
    assert gpu_seconds(8, loading=True) > short              # loading another model takes time too


def test_dtype_is_part_of_the_model_cache_key():
    """The same weights in bfloat16 are another model; float32 is the default on a CPU."""
    from ui.serving.handlers import APP

    assert APP.models.default_dtype() == "float32"              # the suite runs on a CPU
    assert model_key("", "cpu") == model_key(None, "cpu", "float32") == ("default", "cpu", "float32")
    assert model_key("", "cpu", "bfloat16") != model_key("", "cpu", "float32")
    assert model_key(" ", "cpu", default="org/host-default")[0] == "org/host-default"


def test_one_visitors_stop_and_trace_leave_the_others_alone(tmp_path):
    sessions = Sessions(tmp_path)
    a, b = session_key(type("Request", (), {"session_hash": "a"})), session_key(None)
    assert a != b and a.isalnum()
    assert not sessions.stop(a)                                  # nothing running: nothing to stop
    sessions.running.add(a)
    assert sessions.stop(a) and sessions.stop_flag(a).is_set() and not sessions.stop_flag(b).is_set()
    assert sessions.trace_file([], a) is None                   # no events, no file
    path = sessions.trace_file([Step(1, 5, "x", 0.1)], a)
    assert path and sessions.trace_file([Step(1, 6, "y", 0.1)], b) != path
    sessions.end(a)                                              # a left: their trace goes, b's stays
    assert not (tmp_path / a / "clasp-trace.jsonl").exists() and (tmp_path / b / "clasp-trace.jsonl").exists()


def test_settings_from_a_page_or_an_api_call_are_typed_or_refused_by_name():
    assert parse(dict(num_skip=None, draft_len=4.0, det="0.5", auto=1, prompt="ignored")) == \
        dict(num_skip=None, draft_len=4, det=0.5, auto=True)
    for name, bad, said in [("draft_len", 2.5, "K must be a whole number"), ("seed", float("inf"), "seed must be"),
                            ("det", "high", "DET must be a number"), ("num_skip", "x", "M must be a whole number")]:
        with pytest.raises(ValueError, match=said):
            SETTINGS[name].parse(bad)


def test_a_setting_that_is_not_a_number_is_refused_before_any_model_loads(monkeypatch):
    from ui.serving.handlers import APP, run

    monkeypatch.setattr(APP.models, "loader", lambda *a, **k: pytest.fail("no model should load"))
    with pytest.raises(gr.Error, match="LOI must be a whole number, got 'often'"):
        next(run("Hi", "", 8, 4, 0.3, "often", 0.0, 1.0, 0, 8, False))


def test_run_all_takes_runs_parameters_and_gradio_hands_it_the_visitors_request():
    """run's signature is the one list of run parameters: run_all has the same, so Gradio fills them by
    position from the page's inputs and passes the request where run takes it (Run all stays the visitor's)."""
    from gradio.helpers import special_args

    from ui.serving.handlers import RUN_PARAMS, RUN_SIGNATURE, run_all

    inputs = special_args(run_all, list(RUN_PARAMS), request="the visitor's request")[0]
    assert RUN_SIGNATURE.bind(*inputs).arguments == {**{n: n for n in RUN_PARAMS}, "request": "the visitor's request"}


def test_until_the_model_is_ready_the_status_says_what_the_first_run_waits_for(monkeypatch):
    from types import SimpleNamespace

    from ui.serving.models import AppModels, announced

    models = AppModels("default", "cpu")
    first = models.readiness(None)
    assert first != "Ready." and "converting the embedded weights once" in first and "warm-up" in first
    models.loading = "default"
    assert models.readiness(None).startswith("Loading default for another run")
    models.loading = None
    monkeypatch.setattr(models, "loaded", lambda spec, dtype="auto": SimpleNamespace())
    assert models.readiness(None) == "Ready."
    said, ran = [], []
    announced(ran.append, said.append)("lm")
    assert said[0].startswith("Warming up") and ran == ["lm"]          # said before it runs


def test_a_replayed_auto_run_says_what_auto_did_and_that_it_never_drafted(page):
    from pathlib import Path

    from ui.serving import handlers

    out = handlers.load_trace(str(Path(__file__).resolve().parents[1] / "assets" / "no-draft-trace.jsonl"))
    V = handlers.APP.components
    status = out[V["status"]]
    assert status.startswith("Replaying no-draft-trace.jsonl") and "auto decoded plainly" in status
    assert "1.05×" in status and "acceptance 0.75, assumed" in status
    assert "no drafting: both sides decoded plainly" in out[V["summary"]]
    assert "speedup" not in out[V["summary"]]

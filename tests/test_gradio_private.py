"""ui.serving.gradio_private against a real Gradio app and its real queue: what it reads and writes there, and how
it steps aside, loudly, on a Gradio it was not written for."""
import threading
import time

import gradio as gr
import pytest
from gradio_client import Client

from tests.conftest import free_port
from ui.serving import gradio_private


def until(condition, timeout=60.0):
    """Wait for ``condition()`` to hold (polling); its last value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.fixture
def busy_app():
    """A served Blocks whose one worker is held by a first event, so the app's own ``run`` events wait in
    its queue (they never run: the app closes before the worker is let go). Yields (demo, client, inputs
    of the runs submitted)."""
    from ui.serving import handlers

    release, holding = threading.Event(), threading.Event()

    def hold(x):
        holding.set()
        release.wait(120)
        return x

    with gr.Blocks() as demo:
        boxes = [gr.Textbox() for _ in range(11)]
        out = gr.Textbox()
        gr.Button().click(hold, boxes[0], out, api_name="hold", concurrency_id="engine")
        gr.Button().click(handlers.run, boxes, out, api_name="run", concurrency_id="engine")
        gr.Button().click(lambda x: x, boxes[0], out, api_name="echo", concurrency_id="engine")
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        client.submit("x", api_name="/hold")
        assert holding.wait(60), "the first event never started"
        yield demo, client
    finally:
        demo.close()
        release.set()


def test_the_models_of_waiting_runs_are_read_from_the_pages_real_queue(busy_app):
    from ui.serving import handlers

    demo, client = busy_app
    for model in ("org/tiny-llama", ""):
        client.submit("Hi", model, *[""] * 9, api_name="/run")
    client.submit("y", api_name="/echo")
    calls = until(lambda: len(gradio_private.queued_calls(demo)) == 3 and gradio_private.queued_calls(demo))
    assert calls, "the events never reached the queue"
    runs = sorted(data[:2] for fn, data in calls if fn is handlers.run)        # the client sends them in any order
    assert runs == [["Hi", ""], ["Hi", "org/tiny-llama"]] and ["y"] in [data for _, data in calls]
    assert sorted(handlers.queued_models(demo)) == [(handlers.DEFAULT_SPEC, handlers.APP.models.device),
                                               ("org/tiny-llama", handlers.APP.models.device)]


def test_a_page_not_yet_served_has_nothing_waiting():
    with gr.Blocks() as demo:
        gr.Markdown("x")
    assert gradio_private.queued_calls(demo) == []


def test_the_installed_gradio_is_the_one_written_for():
    """requirements.txt pins the version the internals were read from; the note is empty there."""
    from pathlib import Path

    pin = next(line for line in (Path(__file__).parents[1] / "requirements.txt").read_text().splitlines()
               if line.startswith("gradio=="))
    assert pin.split("==")[1].startswith(gradio_private.WRITTEN_FOR + ".")
    assert gradio_private.supported() and gradio_private.version_note() == ""


def test_another_gradio_turns_the_internals_off_and_says_so_once(monkeypatch, capsys):
    import asyncio

    from gradio.state_holder import SessionState

    monkeypatch.setattr(gradio_private, "installed", lambda: "7.0.0")
    monkeypatch.setattr(gradio_private, "_said", [])
    note = gradio_private.version_note()
    assert "Gradio 7.0.0 is installed" in note and "6.31.x" in note
    with gradio_private.Page() as page:
        text, html = gr.Textbox(), gr.HTML()
        gr.Button().click(lambda: None, None, [text, html])
    page.queue()
    assert not gradio_private.set_queue_polling(page, 0.02, 0.2)        # Gradio's own polling stays
    assert gradio_private.queue_polling(page)[0] < 0.02
    assert gradio_private.queued_calls(page) == []
    fn = next(iter(page.fns.values()))
    out = asyncio.run(page.postprocess_data(fn, {text: "hello"}, SessionState(page)))
    assert out[0] == "hello" and out[1] != gradio_private.UNCHANGED          # Gradio's own update for the rest
    err = capsys.readouterr().err
    assert err.count("!! Gradio 7.0.0 is installed") == 1, err                  # one line, however many uses

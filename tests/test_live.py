"""Streaming to the page: the engine never waits for rendering, and snapshots are paced by their cost."""
import threading
import time

import pytest

from ui.serving.live import Pacer, batches, start_engine


def slow_events(n, gap=0.0):
    for i in range(n):
        if gap:
            time.sleep(gap)
        yield i


def test_the_engine_runs_ahead_of_a_slow_page():
    stop = threading.Event()
    produced = []

    def run():
        for i in slow_events(50, gap=0.004):
            produced.append(i)
            yield i

    q = start_engine([run], stop)
    got, finished_at = [], None
    pacer = Pacer(min_interval=0.0)
    for new, finished in batches(q, pacer):
        got += new
        if finished:
            break
        if finished_at is None:
            time.sleep(0.6)                    # a slow render of the first snapshot
            finished_at = len(produced)
    assert got == list(range(50))
    assert finished_at == 50                   # all events were produced while the page was busy


def test_a_second_run_does_not_start_after_stop():
    stop = threading.Event()
    started = []

    def first():
        started.append("clasp")
        stop.set()
        yield "a"

    def second():
        started.append("vanilla")
        yield "b"

    got = [e for new, _ in batches(start_engine([first, second], stop), Pacer()) for e in new]
    assert got == ["a"] and started == ["clasp"]


def test_engine_errors_reach_the_page():
    def broken():
        yield 1
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        for _ in batches(start_engine([broken], threading.Event()), Pacer()):
            pass


def test_pacer_spaces_snapshots_by_their_cost():
    p = Pacer(share=0.1, min_interval=0.2, heavy_share=0.02, heavy_min_interval=3.0)
    assert p.due() and not p.heavy_due()
    p.done(0.005, heavy=False)                 # a cheap snapshot: the minimum interval applies
    assert 0.15 < p.wait() <= 0.2
    p.done(0.1, heavy=False)                   # costlier ones are spaced to keep ~10% of the time
    assert p.wait() > 0.3
    t0 = time.perf_counter()
    p.done(0.2, heavy=True)                    # a heavy snapshot: the next heavy one 10 s later
    assert p.next_heavy - t0 >= 9.9


def test_default_pacer_leaves_the_engine_most_of_a_2_core_cpu():
    p = Pacer()
    assert p.due() and not p.heavy_due()       # the first snapshot goes out at once, figures later
    t0 = time.perf_counter()
    p.done(0.023, heavy=False)                 # a live snapshot at Gradio's measured cost
    assert p.next_live - t0 >= 0.5             # at most two a second
    assert 0.023 / (p.next_live - t0) <= 0.05  # and their cost stays within 5% of the time
    t0 = time.perf_counter()
    p.done(0.105, heavy=True)                  # figures and tables: at most every 5 s, ~1.5% of the time
    assert p.next_heavy - t0 >= 0.105 / 0.015 - 0.01


def test_a_run_ended_by_the_page_stays_stopped_when_the_next_run_clears_the_flag():
    from ui.serving.live import RunStop

    flag = threading.Event()                   # the visitor's flag, shared by their runs
    old = RunStop(flag)
    old.set()                                  # the page went away: the old run must stop
    flag.clear()                               # the visitor's next run clears their flag
    assert old.is_set() and not RunStop(flag).is_set()
    flag.set()                                 # Stop reaches a run through the visitor's flag
    assert RunStop(flag).is_set()


def test_calm_queue_stops_gradios_millisecond_polling():
    import gradio as gr

    from ui.serving.live import QUEUE_POLL_S, calm_queue

    with gr.Blocks() as demo:
        gr.Markdown("x")
    demo.queue()
    calm_queue(demo)                                           # Gradio's own: 1 ms (50 ms on Windows)
    assert demo._queue.sleep_when_free >= QUEUE_POLL_S
    assert demo._queue.progress_update_sleep_when_free >= 0.2
    calm_queue(object())                                       # no queue (another Gradio): nothing to do


def test_page_sends_what_gradio_sends_for_a_partial_snapshot():
    """ui.serving.live.Page passes over the outputs a snapshot leaves out; the carried ones come out as Gradio
    makes them, the others as the empty update Gradio sends for them (nothing for a gr.State)."""
    import asyncio

    import gradio as gr
    from gradio.state_holder import SessionState

    from ui.serving.live import UNCHANGED, Page

    with Page() as page:
        text, html, plot_md, kept = gr.Textbox(), gr.HTML(), gr.Markdown(), gr.State(None)
        button = gr.Button()
        button.click(lambda: None, None, [text, html, plot_md, kept])
    fn = next(iter(page.fns.values()))

    async def both(prediction):
        ours = await page.postprocess_data(fn, dict(prediction), SessionState(page))
        gradio = await gr.Blocks.postprocess_data(page, fn, dict(prediction), SessionState(page))
        return ours, gradio

    ours, gradio = asyncio.run(both({text: "hello", kept: 3}))
    assert ours[0] == gradio[0] == "hello" and ours[3] is gradio[3] is None
    assert ours[1] == ours[2] == UNCHANGED
    assert gradio[2] == UNCHANGED and gradio[1]["__type__"] == "update"      # Gradio's HTML adds empty props
    assert not any(k for k in gradio[1] if k not in ("__type__", "props"))
    ours, gradio = asyncio.run(both({text: "a", html: "<b>b</b>", plot_md: "c", kept: 4}))   # every output
    assert ours == gradio
    ours, gradio = asyncio.run(both({html: gr.update(visible=False)}))      # an update it carries: Gradio's
    assert ours[1] == gradio[1] and ours[1]["visible"] is False

"""Streaming to the page: the engine never waits for rendering, and snapshots are paced by their cost."""
import threading

import pytest

from ui.serving.live import Pacer, batches, start_engine


class FakeClock:
    """Time that moves only when told: the pacer's decisions, independent of the machine's speed."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_the_engine_runs_ahead_of_a_slow_page():
    """While the page renders its first snapshot, the engine produces every other event: the page holds
    that render until they are all made, so an engine that waited for the page would never finish."""
    stop, rendering, all_made = threading.Event(), threading.Event(), threading.Event()

    def run():
        yield 0
        assert rendering.wait(timeout=60)
        yield from range(1, 50)
        all_made.set()

    batches_seen = []
    for new, finished in batches(start_engine([run], stop), Pacer(min_interval=0.0, clock=FakeClock())):
        batches_seen.append((new, finished))
        if not finished and len(batches_seen) == 1:
            rendering.set()                    # a slow render of the first snapshot
            assert all_made.wait(timeout=60), "the engine waited for the page"
    assert batches_seen[0] == ([0], False) and batches_seen[-1][1]
    assert [e for new, _ in batches_seen for e in new] == list(range(50))


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
    clock = FakeClock()
    p = Pacer(share=0.1, min_interval=0.2, heavy_share=0.02, heavy_min_interval=3.0, clock=clock)
    assert p.due() and not p.heavy_due()
    p.done(0.005, heavy=False)                 # a cheap snapshot: the minimum interval applies
    assert p.wait() == pytest.approx(0.2) and not p.due()
    clock.sleep(0.15)
    assert p.wait() == pytest.approx(0.05) and not p.due()
    clock.sleep(0.06)
    assert p.due() and p.wait() == 0.0
    p.done(0.1, heavy=False)                   # costlier ones are spaced to keep ~10% of the time
    assert p.wait() == pytest.approx((0.7 * 0.005 + 0.3 * 0.1) / 0.1)      # the running mean of the cost
    assert not p.heavy_due()
    clock.sleep(3.0)
    assert p.heavy_due()
    t0 = clock.now()
    p.done(0.2, heavy=True)                    # a heavy snapshot: the next heavy one 10 s later
    assert p.next_heavy - t0 == pytest.approx(10.0) and not p.heavy_due()


def test_default_pacer_leaves_the_engine_most_of_a_2_core_cpu():
    clock = FakeClock()
    p = Pacer(clock=clock)
    assert p.due() and not p.heavy_due()       # the first snapshot goes out at once, figures later
    t0 = clock.now()
    p.done(0.023, heavy=False)                 # a live snapshot at Gradio's measured cost
    assert p.next_live - t0 >= 0.5             # at most two a second
    assert 0.023 / (p.next_live - t0) <= 0.05  # and their cost stays within 5% of the time
    p.done(0.105, heavy=True)                  # figures and tables: at most every 5 s, ~1.5% of the time
    assert p.next_heavy - t0 == pytest.approx(0.105 / 0.015)


def test_the_stream_yields_when_the_pacer_says_a_snapshot_is_due():
    """The events that arrive before a snapshot is due wait for it, together; the time is the pacer's."""
    clock, stop, go = FakeClock(), threading.Event(), [threading.Event() for _ in range(3)]

    def run():
        for i in range(3):
            assert go[i].wait(timeout=60)
            yield i

    pacer = Pacer(min_interval=1.0, clock=clock)
    stream = batches(start_engine([run], stop), pacer)
    go[0].set()
    assert next(stream) == ([0], False)        # the first snapshot goes out at once
    pacer.done(0.001, heavy=False)             # the next is due one second later, on the pacer's clock
    go[1].set()
    clock.sleep(1.0)
    assert next(stream) == ([1], False)
    pacer.done(0.001, heavy=False)
    go[2].set()                                # not due again (the clock stands): the rest comes at the end
    assert next(stream) == ([2], True)


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

    from ui.serving.gradio_private import queue_polling
    from ui.serving.live import QUEUE_POLL_S, calm_queue

    with gr.Blocks() as demo:
        gr.Markdown("x")
    demo.queue()
    calm_queue(demo)                                           # Gradio's own: 1 ms (50 ms on Windows)
    free, progress = queue_polling(demo)
    assert free >= QUEUE_POLL_S and progress >= 0.2
    calm_queue(object())                                       # no queue (another Gradio): nothing to do


def test_page_sends_what_gradio_sends_for_a_partial_snapshot():
    """ui.serving.gradio_private.Page passes over the outputs a snapshot leaves out; the carried ones come out as Gradio
    makes them, the others as the empty update Gradio sends for them (nothing for a gr.State)."""
    import asyncio

    import gradio as gr
    from gradio.state_holder import SessionState

    from ui.serving.gradio_private import UNCHANGED, Page

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

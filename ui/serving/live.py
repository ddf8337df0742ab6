"""Streaming a run to the page without slowing it down.

The engine runs in the app's one engine thread (ui.serving.engine) and drops its events in a queue, so
decoding never waits for the page. The page side drains the queue and sends a snapshot when the
``Pacer`` allows: the time spent
rendering (ours, and Gradio's while the handler is suspended at its yield) is kept to a small share
of the elapsed time, with heavy views (figures, tables) refreshed far more rarely than the tokens.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from ui.serving import gradio_private
from ui.serving.engine import ENGINE, EngineThread

END = object()


class WallClock:
    """The pacer's time: the process's monotonic clock. Tests pass one they move by hand (``now``, ``sleep``)."""

    def now(self) -> float:
        return time.perf_counter()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Pacer:
    """Decides when the next snapshot is due, from what the last ones cost.

    A snapshot's cost is our rendering plus Gradio's processing while the handler waits at its yield.
    Live snapshots (tokens, status) are spaced so their cost stays near ``share`` of the time; heavy
    ones (figures, tables) so theirs stays near ``heavy_share`` and never closer than
    ``heavy_min_interval`` seconds apart.

    The defaults are sized for a 2-core CPU, where every snapshot takes time from the engine (the
    page's threads and the engine share the cores and the GIL), so the page's time is the engine's
    plus what the snapshots cost. Measured there (SmolLM2, a 96-token run): a live snapshot
    costs under 1 ms to render and 1-6 ms in Gradio (``gradio_private.Page`` spares it the outputs it leaves out,
    which cost about 15 ms more); a heavy one about 5-10 ms to render (six ``ui.views.figure`` figures) and 10-25 ms
    in Gradio. Two live snapshots a second and a heavy one at most every 5 s keep the total near 1% of
    the run; the final snapshot renders everything anyway."""

    def __init__(self, share: float = 0.04, min_interval: float = 0.5, heavy_share: float = 0.015,
                 heavy_min_interval: float = 5.0, clock=None):
        self.share, self.min_interval = share, min_interval
        self.heavy_share, self.heavy_min_interval = heavy_share, heavy_min_interval
        self.clock = clock or WallClock()
        now = self.clock.now()
        self.next_live = now                      # the first snapshot goes out at once
        self.next_heavy = now + heavy_min_interval
        self.live_cost = 0.0                      # seconds a live snapshot takes (running mean)
        self.spent = 0.0                          # seconds spent on snapshots so far
        self.count = 0

    def wait(self) -> float:
        """Seconds until the next snapshot is due (never negative)."""
        return max(0.0, self.next_live - self.clock.now())

    def due(self) -> bool:
        return self.clock.now() >= self.next_live

    def heavy_due(self) -> bool:
        return self.clock.now() >= self.next_heavy

    def done(self, seconds: float, heavy: bool) -> None:
        """A snapshot took ``seconds``: space the next ones so the shares stay small."""
        now = self.clock.now()
        self.spent += seconds
        self.count += 1
        if heavy:
            self.next_heavy = now + max(self.heavy_min_interval, seconds / self.heavy_share)
        else:
            self.live_cost = seconds if not self.live_cost else 0.7 * self.live_cost + 0.3 * seconds
        self.next_live = now + max(self.min_interval, self.live_cost / self.share)


class RunStop:
    """One run's stop: the visitor's flag (Stop), or the page's own end of the run. The latter is
    never cleared, so a later run that clears the visitor's flag cannot revive a run that is still
    finishing in the engine thread."""

    def __init__(self, flag):
        self.flag, self.ended = flag, threading.Event()

    def set(self):
        self.ended.set()
        self.flag.set()

    def is_set(self) -> bool:
        return self.ended.is_set() or self.flag.is_set()


def start_engine(runs: Iterable[Callable[[], Iterable]], stop: threading.Event,
                 engine: EngineThread = ENGINE) -> queue.SimpleQueue:
    """Run each event stream in turn in the engine thread; events (then END) arrive in the queue.

    An exception inside the engine is put in the queue too, for the page to report. ``runs`` are
    callables so that a later run (vanilla) is only started if the user has not pressed Stop.
    The streams run after any job queued before them (a stopped run still finishing its round).
    """
    q: queue.SimpleQueue = queue.SimpleQueue()

    def work():
        try:
            for n, make in enumerate(runs):
                if n and stop.is_set():
                    break
                for event in make():
                    q.put(event)
        except BaseException as e:  # noqa: BLE001 - handed to the page, which reports it
            q.put(e)
        finally:
            q.put(END)

    engine.submit(work)
    return q


def batches(q: queue.SimpleQueue, pacer: Pacer) -> Iterator[tuple[list, bool]]:
    """(new events, finished) each time a snapshot is due, and once more when the engine is done."""
    pending: list = []
    while True:
        try:
            item = q.get(timeout=max(0.01, pacer.wait()))
        except queue.Empty:
            item = None
        while item is not None:
            if item is END:
                yield pending, True
                return
            if isinstance(item, BaseException):
                raise item
            pending.append(item)
            try:
                item = q.get_nowait()
            except queue.Empty:
                item = None
        if pending and pacer.due():
            yield pending, False
            pending = []


QUEUE_POLL_S = 0.02         # Gradio's queue loop polls every 1 ms when idle; this page's runs last seconds


def calm_queue(demo) -> None:
    """Make Gradio's queue poll every ``QUEUE_POLL_S`` instead of every millisecond.

    Gradio's queue loop wakes up every 1 ms while no event waits (and its progress loop every
    10 ms), each time taking the GIL from the engine: measured on the 2-core EPYC, the app's event
    loop thread used 0.83 s of CPU in 20 s with nothing to do. A run starts at most 20 ms later
    instead; this app sends no progress bars (its status line streams), so those are polled at 0.2 s.
    Both are Gradio's private attributes (ui.serving.gradio_private): on another Gradio, nothing changes."""
    gradio_private.set_queue_polling(demo, QUEUE_POLL_S, 0.2)

"""One thread for all of the app's torch work, for the app's whole life.

Each thread that calls torch on a CPU gets its own OpenMP team. With more OpenMP threads than
cores, libgomp spins only briefly before it sleeps, so every parallel region of a second team pays
a wake-up: on a 2-core machine a SmolLM2 matrix-vector product ran 2-3x slower in a new thread
than in the thread that used torch first. So the app loads, warms up and decodes in
this one long-lived thread, fed by a job queue, and the page's threads only render.

The page's threads still share the GIL with the engine, and the engine is half Python (op
dispatch between short kernels). Each torch op lets the GIL go; a page thread rendering pure Python
then takes it, and the engine waits until that thread is made to hand it back, after the switch
interval: 5 ms by default, against ops of 20-100 us. So when the engine thread starts, the
process's interval is lowered to 0.2 ms (``SWITCH_INTERVAL``). Measured on the 2-core EPYC with a
pure-Python thread busy 25 ms every 250 ms beside a vanilla decode: the engine's time waiting off
the CPU but not in the run queue (the GIL) fell from 0.65-0.70 s to 0.17-0.27 s per 24-token
decode (means of 3, two sittings, shared machine).

Jobs run one at a time in the order they were submitted: a new run waits for a stopped one that
is still finishing its round. A job submitted from the engine thread itself runs at once (else it
would wait for itself). After a fork (ZeroGPU runs the GPU function in a forked process) the child
starts its own engine thread on first use, since threads do not survive a fork.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")
SWITCH_INTERVAL = 2e-4      # seconds a thread may hold the GIL while another waits (Python's default: 5e-3)


class EngineThread:
    """A daemon thread that runs submitted callables in order; ``submit`` returns a Future."""

    def __init__(self, name: str = "clasp-engine"):
        self.name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, fn: Callable[..., T], *args, **kwargs) -> Future[T]:
        future: Future = Future()
        if self.here():
            _run(future, fn, args, kwargs)
        else:
            self._queue().put((future, fn, args, kwargs))
        return future

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn`` in the engine thread and wait for its result (its exception is raised here)."""
        return self.submit(fn, *args, **kwargs).result()

    def here(self) -> bool:
        """Whether the caller is the engine thread."""
        return self._pid == os.getpid() and self._thread is threading.current_thread()

    @property
    def ident(self) -> int:
        """The engine thread's id (``threading.get_ident()`` inside it); starts it if need be."""
        self._queue()
        return self._thread.ident

    def _queue(self) -> queue.SimpleQueue:
        with self._lock:
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(target=_serve, args=(self._jobs,), name=self.name, daemon=True)
                self._pid = os.getpid()
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
                self._thread.start()
            return self._jobs

    def _after_fork(self) -> None:
        self._lock = threading.Lock()          # a fork can happen while another thread holds it
        self._thread, self._jobs, self._pid = None, None, 0


def _serve(jobs: queue.SimpleQueue) -> None:
    while True:
        future, fn, args, kwargs = jobs.get()
        if future.set_running_or_notify_cancel():
            _run(future, fn, args, kwargs)
        del future, fn, args, kwargs           # drop the finished job's references while waiting


def _run(future: Future, fn, args, kwargs) -> None:
    try:
        future.set_result(fn(*args, **kwargs))
    except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
        future.set_exception(e)


ENGINE = EngineThread()
os.register_at_fork(after_in_child=ENGINE._after_fork)

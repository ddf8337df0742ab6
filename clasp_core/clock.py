"""The engine's clock: synchronised with the GPU, and blind to the time a consumer holds an event.

Timings come from the engine, not from whoever reads its events: a viewer that renders after
every event would otherwise slow every run it shows. So each yield is timed and set aside.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

# a tensor's value read by the host: on a GPU each waits for every kernel queued before it
READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__,
         torch.Tensor.__bool__, torch.Tensor.cpu, torch.Tensor.numpy}


class Clock:
    def __init__(self, device: torch.device):
        self.device = device
        self.start = 0.0                    # when the run's wall time starts (the prefill's start)
        self.paused = 0.0                   # time spent outside the engine, at a yield
        self.syncs = 0                      # the synchronisations ``now`` made

    def now(self) -> float:
        """The time once the GPU has finished what was queued (kernels run asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.syncs += 1
        return time.perf_counter()

    def counting(self) -> HostSyncs:
        """A span of engine work whose host synchronisations are counted (see HostSyncs)."""
        return HostSyncs(self)

    def emit(self, event) -> Iterator:
        """Yield one event; the consumer's time before it asks for the next is not the engine's."""
        t0 = time.perf_counter()
        yield event
        self.paused += time.perf_counter() - t0

    def wall(self) -> float:
        """The engine's seconds since ``start``, without the time spent at yields."""
        return self.now() - self.start - self.paused


class HostSyncs(TorchFunctionMode):
    """Counts the host's synchronisations with the device over a span of engine work (``with``): the
    clock's own, and every read of a tensor's value (``READS``: item, tolist, float(), int(), ...).

    On a GPU each of these waits for the device (on a CPU they are the reads that would). Counting is asked
    for with ``CLASP_COUNT_SYNCS=1``, else ``count`` stays None: the mode sees every torch call in the span,
    about a microsecond each, which the timed runs should not pay. The counts depend on the code path, not
    on timing, so one counted run tells them. Modes are per thread: a viewer on another thread is never
    counted."""

    def __init__(self, clock: Clock):
        super().__init__()
        self.clock = clock
        self.on = os.environ.get("CLASP_COUNT_SYNCS") == "1"
        self.reads = 0
        self.count: int | None = None

    def __enter__(self):
        self.before = self.clock.syncs
        return super().__enter__() if self.on else self

    def __exit__(self, *exc):
        if not self.on:
            return None
        self.count = self.reads + self.clock.syncs - self.before
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READS:
            self.reads += 1
        return func(*args, **(kwargs or {}))

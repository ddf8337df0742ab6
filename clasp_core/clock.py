"""The engine's clock: synchronised with the GPU, and blind to the time a consumer holds an event.

Timings come from the engine, not from whoever reads its events: a viewer that renders after
every event would otherwise slow every run it shows. So each yield is timed and set aside.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import torch


class Clock:
    def __init__(self, device: torch.device):
        self.device = device
        self.start = 0.0                    # when the run's wall time starts (the prefill's start)
        self.paused = 0.0                   # time spent outside the engine, at a yield

    def now(self) -> float:
        """The time once the GPU has finished what was queued (kernels run asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def emit(self, event) -> Iterator:
        """Yield one event; the consumer's time before it asks for the next is not the engine's."""
        t0 = time.perf_counter()
        yield event
        self.paused += time.perf_counter() - t0

    def wall(self) -> float:
        """The engine's seconds since ``start``, without the time spent at yields."""
        return self.now() - self.start - self.paused

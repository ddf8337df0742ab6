"""Every use of Gradio's private internals, in one place, checked against the version it was written for.

The page reaches past Gradio's public API three times, each to save the engine time or a visitor a wait:
it slows the queue's idle polling (``Blocks._queue``'s sleep intervals), reads the runs waiting in that
queue (which models they ask for, so a load does not evict one), and gives streamed snapshots only the
outputs they carry (``Blocks.postprocess_data``, outputs matched by their ``_id``). None of this is an
API Gradio promises: it was written against ``WRITTEN_FOR`` (the pin in requirements.txt). On any
other version each of them steps aside (the queue polls as Gradio likes, nothing is read from it, every
snapshot goes through Gradio whole), one line on stderr says so, and ``version_note`` gives the page's
status a sentence about it.
"""
from __future__ import annotations

import copy
import sys
from collections.abc import Callable

import gradio as gr

WRITTEN_FOR = "6.31"                  # major.minor of the Gradio these internals were read from
UNCHANGED = {"__type__": "update"}    # what the page receives for an output a snapshot leaves alone
_said: list[str] = []


def installed() -> str:
    return gr.__version__


def supported() -> bool:
    """Whether the installed Gradio is the one this module was written for (said once on stderr if not)."""
    ok = installed().split(".")[:2] == WRITTEN_FOR.split(".")
    if not ok and not _said:
        _said.append(installed())
        print(f"!! {version_note()}", file=sys.stderr, flush=True)
    return ok


def version_note() -> str:
    """A sentence for the page's status where the installed Gradio is not the one written for, else ''."""
    if installed().split(".")[:2] == WRITTEN_FOR.split("."):
        return ""
    return (f"Gradio {installed()} is installed; the page's use of Gradio's internals was written for "
            f"{WRITTEN_FOR}.x and is off: the queue polls every millisecond, waiting runs' models may be "
            f"evicted by a load, and every snapshot sends all outputs.")


def set_queue_polling(demo: gr.Blocks, free_s: float, progress_s: float) -> bool:
    """Make the queue's loops sleep at least ``free_s`` (events) and ``progress_s`` (progress bars) while
    idle. Returns whether it did (not on another Gradio, nor before ``demo.queue()``)."""
    q = getattr(demo, "_queue", None) if supported() else None
    if q is None:
        return False
    q.sleep_when_free = max(q.sleep_when_free, free_s)
    q.progress_update_sleep_when_free = max(q.progress_update_sleep_when_free, progress_s)
    return True


def queue_polling(demo: gr.Blocks) -> tuple[float, float]:
    """The queue's idle sleeps (events, progress bars) in seconds."""
    q = demo._queue
    return q.sleep_when_free, q.progress_update_sleep_when_free


def queued_calls(demo: gr.Blocks) -> list[tuple[Callable, list]]:
    """(function, raw inputs) of every event waiting in ``demo``'s queue, oldest first per concurrency
    group; empty before ``demo.queue()`` and on another Gradio."""
    q = getattr(demo, "_queue", None) if supported() else None
    if q is None:
        return []
    calls = []
    for events in list(q.event_queue_per_concurrency_id.values()):
        for event in list(events.queue):
            data = getattr(event.data, "data", None) if event.data is not None else None
            calls.append((event.fn.fn, list(data or [])))
    return calls


def block_id(block) -> int | None:
    """The id Gradio gives a component in its page config (None for anything else)."""
    return getattr(block, "_id", None)


class Page(gr.Blocks):
    """``gr.Blocks`` whose streamed snapshots cost Gradio only the outputs they carry.

    A generator that yields {component: value} for some outputs leaves the others to Gradio, which fills
    each with an empty ``gr.update()`` and then, for each one, rebuilds the component from its constructor
    arguments and refreshes the session's copy of the page config: about 15 ms for a live snapshot of this
    page (5 of 25 outputs), against 1 ms for the five it carries. Here the outputs a snapshot carries go
    through Gradio as usual and the others come out as the empty update the page ignores, which is
    what Gradio sends for them after its rebuild (a ``gr.State`` output: nothing); every other return
    goes through Gradio unchanged."""

    async def postprocess_data(self, block_fn, predictions, state):
        if isinstance(predictions, dict) and 0 < len(predictions) < len(block_fn.outputs) and supported():
            carried = {block_id(k) for k in predictions}
            kept = [o for o in block_fn.outputs if block_id(o) in carried]
            if len(kept) == len(predictions):          # every key is one of this event's outputs
                narrow = copy.copy(block_fn)
                narrow.outputs = kept
                values = iter(await super().postprocess_data(narrow, predictions, state))
                return [next(values) if block_id(o) in carried else None if o.stateful else dict(UNCHANGED)
                        for o in block_fn.outputs]
        return await super().postprocess_data(block_fn, predictions, state)

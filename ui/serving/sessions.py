"""Per-visitor state that outlives one handler call: the Stop button's flag, the trace file, whether
a run is in progress. Files rather than memory where a ZeroGPU run (a forked process) must see them.

Each page process has one ``Sessions``: a temporary folder, one subfolder per visitor (by a hash of
Gradio's session id), removed when the process exits.
"""
from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from pathlib import Path

from clasp_core import trace

TRACE_NAME = "clasp-trace.jsonl"


def session_key(request) -> str:
    """A file-name-safe key for the visitor's session (a gr.Request, or None when called directly)."""
    raw = getattr(request, "session_hash", None) or "local"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class StopFlag:
    """One visitor's Stop button. A file rather than a threading.Event, so that it also reaches a
    run that ZeroGPU executes in a forked process."""

    def __init__(self, folder: Path):
        self.path = folder / "stop"

    def set(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def clear(self):
        self.path.unlink(missing_ok=True)

    def is_set(self) -> bool:
        return self.path.exists()


class Sessions:
    """The visitors' stop flags and trace files under one folder, and the sessions with a run in progress
    (the page's process only: a forked run never reads it)."""

    def __init__(self, root: Path | None = None):
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="clasp-sessions-"))
            atexit.register(shutil.rmtree, root, ignore_errors=True)
        self.root = root
        self.running: set[str] = set()

    def stop_flag(self, key: str) -> StopFlag:
        return StopFlag(self.root / key)

    def trace_file(self, events: list, key: str) -> str | None:
        """This session's trace: one file per session, replaced by each run, removed when it ends."""
        if not events:
            return None
        path = self.root / key / TRACE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        trace.write_trace(events, path)
        return str(path)

    def end(self, key: str) -> None:
        """The visitor left: stop their run and delete their trace."""
        self.stop_flag(key).set()
        (self.root / key / TRACE_NAME).unlink(missing_ok=True)

    def stop(self, key: str) -> bool:
        """Ask this visitor's run to stop; False when they have none."""
        if key not in self.running:
            return False
        self.stop_flag(key).set()
        return True

"""Where the engine keeps what it makes once and reuses: converted weights, built kernels, static sets.

A module of its own so that any part of the engine can ask without importing the model loader (the
CPU kernel is built from inside the runner, which the loader imports)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$CLASP_CACHE``, else ``clasp-visualizer`` under the user's cache dir (``$XDG_CACHE_HOME`` or ~/.cache)."""
    base = os.environ.get("CLASP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "clasp-visualizer")
    return Path(base)

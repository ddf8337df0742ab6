import json
from pathlib import Path

import pytest
import torch

from clasp_core.bench.gpu_check import tiny_llama  # noqa: F401 - the tests' tiny model, defined once
from ui.page_bench import free_port  # noqa: F401 - one free-port helper for the app tests and page_bench

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "clasp_core" / "bench" / "data" / "spec_bench_dev.jsonl"   # shipped with the bench

torch.set_num_threads(max(1, torch.get_num_threads()))



@pytest.fixture(scope="session")
def tiny():
    from clasp_core.model import from_modules
    return from_modules(tiny_llama(), name="tiny-llama")


@pytest.fixture(scope="session")
def embedded():
    """The real embedded default model, fp32 on CPU (loaded once per test session)."""
    from clasp_core.model import load_model
    return load_model(None, device="cpu", dtype="float32")


def bench_prompts(per_task: int = 1) -> list[dict]:
    rows = [json.loads(line) for line in BENCH.read_text().splitlines() if line.strip()]
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        if seen.get(r["category"], 0) < per_task:
            seen[r["category"]] = seen.get(r["category"], 0) + 1
            out.append(r)
    return out




@pytest.fixture(scope="module")
def app_url():
    """The app built and served on a free local port, for one test module."""
    import app

    demo = app.build()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def named(out, names=None) -> dict:
    """An API result of the app by output name (app.RUN_OUTPUTS unless other names are given)."""
    import app
    return dict(zip(names or app.RUN_OUTPUTS, out))

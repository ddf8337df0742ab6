import json
from pathlib import Path

import pytest
import torch

from clasp_core.bench.gpu_check import tiny_llama  # noqa: F401 - the tests' tiny model, defined once
from ui.bench.page import free_port  # noqa: F401 - one free-port helper for the app tests and the page bench

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


@pytest.fixture(scope="session")
def app_url():
    """The app built once per test session and served as `python app.py` serves it (theme, stylesheet) on
    a free local port: the API, sessions, models and browser tests share it, and its loaded model."""
    from ui import page

    demo = page.build()
    port = free_port()
    page.launch(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture
def page(monkeypatch):
    """``ui.page.build()`` for a unit test, leaving the served page of ``app_url`` working: the app keeps one
    page per process (its components by name, the queue its model cache reads), so both are put back."""
    from ui import page
    from ui.serving.handlers import APP

    monkeypatch.setattr(APP, "components", {})
    monkeypatch.setattr(APP.models, "queued", APP.models.queued)
    return page.build()


# the tests' usual run through /run: short, CLaSp drafting (auto off), greedy
RUN = dict(model="", num_skip=8, draft_len=4, det=0.3, loi=2, temperature=0.0, top_p=1.0, seed=0,
           max_new_tokens=16, auto=False)


def run_args(prompt: str, **settings) -> dict:
    """/run's arguments by keyword (as ui/bench/page.py calls it): ``RUN`` with ``settings`` over it."""
    from ui.serving.handlers import RUN_PARAMS

    unknown = set(settings) - set(RUN_PARAMS)
    assert not unknown, f"not a /run parameter: {unknown}"
    return dict(RUN, prompt=prompt, **settings)


def named(out, names=None) -> dict:
    """An API result of the app by output name (ui.page.RUN_OUTPUTS unless other names are given)."""
    from ui.page import RUN_OUTPUTS
    return dict(zip(names or RUN_OUTPUTS, out))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, embedded):
    """A 3-layer random Llama with the embedded model's tokenizer, saved as a normal model directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = embedded.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=embedded.eos_ids[0], bos_token_id=1, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path

import json
from pathlib import Path

import pytest
import torch

from ui.page_bench import free_port  # noqa: F401 - one free-port helper for the app tests and page_bench

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "clasp_core" / "bench" / "data" / "spec_bench_dev.jsonl"   # shipped with the bench

torch.set_num_threads(max(1, torch.get_num_threads()))


def tiny_llama(layers: int = 6, seed: int = 0, kv_heads: int = 2, vocab: int = 97):
    """A small random-weight Llama built in the test (fp32, CPU, deterministic)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).eval()
    # random init is near-uniform; sharpen the head so greedy decoding has clear winners
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model


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

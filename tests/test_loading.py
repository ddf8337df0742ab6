"""Models other than the default through the same --model flag: a local dir, an HF-cache id, a .gguf."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clasp_core.decoding import GenConfig, generate
from clasp_core.model import default_gguf_path, load_model
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
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


def test_local_directory(tiny_dir):
    lm = load_model(str(tiny_dir), device="cpu", dtype="float32")
    assert lm.num_layers == 3 and lm.name == tiny_dir.name
    done = list(generate(lm, "Hello there", GenConfig(num_skip=1, det=0.0, max_new_tokens=8), "clasp"))[-1]
    assert done.new_tokens == 8 or done.stop_reason == "eos"


def test_hf_cache_id(tiny_dir, tmp_path):
    """An id already in the local Hugging Face cache loads with no network."""
    snap = tmp_path / "hub" / "models--local--tiny-llama" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for f in tiny_dir.iterdir():
        os.symlink(f, snap / f.name)
    (tmp_path / "hub" / "models--local--tiny-llama" / "refs").mkdir()
    (tmp_path / "hub" / "models--local--tiny-llama" / "refs" / "main").write_text("0123abcd")
    code = ("from clasp_core.model import load_model; lm = load_model('local/tiny-llama', device='cpu'); "
            "print('layers', lm.num_layers)")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "layers 3" in res.stdout, res.stderr[-2000:]
    res = subprocess.run([sys.executable, "-c", code.replace("local/tiny-llama", "local/absent")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "not found as a local directory" in res.stderr


def test_gguf_file_uses_the_cached_conversion():
    path = default_gguf_path()
    lm = load_model(str(path), device="cpu", dtype="float32")
    assert lm.num_layers == 30 and lm.name == Path(path).name

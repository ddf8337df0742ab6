"""Models other than the default through the same --model flag: a local dir, a Hub id, a .gguf."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clasp_core.decoding import GenConfig, generate
from clasp_core.model import default_gguf_path, load_model
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_local_directory(tiny_dir):
    lm = load_model(str(tiny_dir), device="cpu", dtype="float32")
    assert lm.num_layers == 3 and lm.name == tiny_dir.name
    done = list(generate(lm, "Hello there", GenConfig(num_skip=1, det=0.0, max_new_tokens=8), "clasp"))[-1]
    assert done.new_tokens == 8 or done.stop_reason == "eos"


def hub_cache(hf_home: Path, repo_id: str, files: list[Path], rev: str = "0123abcd") -> None:
    """Lay `files` out as the Hub cache does: models--org--name/snapshots/<rev>/ plus refs/main."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "snapshots" / rev).mkdir(parents=True)
    for f in files:
        os.symlink(f, repo / "snapshots" / rev / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)


def test_hub_ids_offline(tiny_dir, tmp_path):
    """With HF_HUB_OFFLINE=1 a cached Hub id loads from HF_HOME's cache; an uncached one is a clear error."""
    hub_cache(tmp_path, "org/tiny-llama", sorted(tiny_dir.iterdir()))
    hub_cache(tmp_path, "org/no-weights", [tiny_dir / "config.json"])
    code = """
from clasp_core.decoding import GenConfig, generate
from clasp_core.model import load_model
said = []
lm = load_model("org/tiny-llama", device="cpu", progress=said.append)
done = list(generate(lm, "Hello", GenConfig(num_skip=1, max_new_tokens=4), "clasp"))[-1]
print("loaded", lm.name, lm.num_layers, done.new_tokens, said)
for bad in ("org/absent", "org/no-weights"):
    try:
        load_model(bad, device="cpu")
    except ValueError as e:
        print("error", e)
"""
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    lines = res.stdout.splitlines()
    assert res.returncode == 0 and lines[0].startswith("loaded org/tiny-llama 3 "), res.stderr[-2000:]
    assert "Loading org/tiny-llama on cpu" in lines[0]
    assert "'org/absent' not found in the local Hugging Face cache" in lines[1]
    assert str(tmp_path / "hub") in lines[1] and "HF_HUB_OFFLINE=1 forbids downloading" in lines[1]
    assert lines[2] == "error org/no-weights has no safetensors weights on the Hub (only those are loaded here)"


def test_gguf_file_uses_the_cached_conversion():
    path = default_gguf_path()
    lm = load_model(str(path), device="cpu", dtype="float32")
    assert lm.num_layers == 30 and lm.name == Path(path).name

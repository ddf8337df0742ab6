"""make bench-page's own parts: the engine-alone process and its turns (the page side is app.py itself,
driven as the app tests drive it)."""
import pytest
import torch

from ui.bench import page as page_bench


@pytest.mark.heavy
def test_the_engine_alone_serves_one_turn_per_job(tmp_path, embedded):
    """The long-lived engine-alone process loads a model once, warms it up with page_bench's own warm-up
    run (M 14: the model needs more layers) and answers each job with its seconds and token counts."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = embedded.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=16,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=None, bos_token_id=1, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    solo = page_bench.Alone(str(tmp_path))
    try:
        turns = [solo.run("Hello there", page_bench.RUNS[name], 6) for name in ("fixed", "defaults")]
    finally:
        solo.close()
    assert solo.proc.returncode == 0
    for turn in turns:
        assert turn["alone_s"] > 0
        assert turn["alone_tokens"] == {"clasp": 6, "vanilla": 6}


def test_the_app_is_paused_while_the_engine_runs_alone():
    import subprocess
    import sys
    from pathlib import Path

    def state(pid, want):
        """The process's state letter once it is one of ``want`` (a signal is delivered asynchronously)."""
        import time

        for _ in range(200):
            s = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if s in want:
                break
            time.sleep(0.005)
        return s

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with page_bench.paused(proc):
            assert state(proc.pid, "T") == "T"              # stopped: it takes no CPU from the engine alone
        assert state(proc.pid, "SR") in "SR"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.browser
@pytest.mark.heavy
def test_the_browser_side_times_a_run_to_done_and_reads_its_trace(app_url):
    """page_bench --browser: Chromium sets the prompt and knobs, the clock stops at the status's "Done.",
    and the run's trace (fetched from the page's link) gives the engine's seconds and the token counts."""
    browser = page_bench.Browser(app_url)
    try:
        first = browser.run("Name a colour.", page_bench.RUNS["fixed"], 8)
        again = browser.run("Name a fruit.", page_bench.RUNS["defaults"], 16)
    finally:
        browser.close()
    for out, n in ((first, 8), (again, 16)):   # the page's max new tokens: 8 to 512 in steps of 8
        assert 0 < out["engine_s"] < out["page_s"]
        assert out["browser_cpu_s"] > 0
        assert set(out["tokens"]) == {"clasp", "vanilla"} and all(0 < t <= n for t in out["tokens"].values())
    assert again["tokens"] != first["tokens"] or again["engine_s"] != first["engine_s"]   # its own trace

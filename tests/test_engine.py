"""All torch work of the app in one thread (ui.serving.engine): loading, warm-up and every run."""
import multiprocessing
import threading

import pytest

from ui.serving.engine import ENGINE, EngineThread


def test_jobs_run_in_order_in_one_thread_and_errors_come_back():
    engine = EngineThread(name="test-engine")
    gate = threading.Event()
    ran = []

    def job(n):
        if n == 0:
            gate.wait(5)                       # the later jobs queue up behind a slow first one
        ran.append((n, threading.get_ident()))
        return n

    futures = [engine.submit(job, n) for n in range(4)]
    gate.set()
    assert [f.result(timeout=5) for f in futures] == [0, 1, 2, 3]
    assert [n for n, _ in ran] == [0, 1, 2, 3]
    assert {t for _, t in ran} == {engine.ident} and engine.ident != threading.get_ident()

    def broken():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        engine.call(broken)
    assert engine.call(threading.get_ident) == engine.ident          # the thread survives a failed job


def test_the_engine_thread_gets_the_gil_back_quickly_and_keeps_a_smaller_interval():
    import sys

    from ui.serving.engine import SWITCH_INTERVAL

    old = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)                                  # Python's default
        EngineThread(name="test-engine").call(lambda: None)
        assert sys.getswitchinterval() <= SWITCH_INTERVAL * 1.01     # a page thread hands the GIL back soon
        sys.setswitchinterval(SWITCH_INTERVAL / 4)                    # a host that chose less keeps it
        EngineThread(name="test-engine").call(lambda: None)
        assert sys.getswitchinterval() <= SWITCH_INTERVAL / 4 * 1.01
    finally:
        sys.setswitchinterval(old)


def test_a_job_that_submits_runs_its_inner_job_at_once():
    engine = EngineThread(name="test-engine")
    outer = engine.call(lambda: (engine.here(), engine.call(threading.get_ident)))
    assert outer == (True, engine.ident) and not engine.here()


def _child_engine(out):
    out.put((ENGINE.call(threading.get_ident), threading.get_ident()))


def test_a_forked_process_gets_its_own_engine_thread():
    """ZeroGPU runs the GPU function in a forked process: threads do not survive a fork."""
    parent = ENGINE.ident
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_child_engine, args=(out,))
    proc.start()
    engine_ident, main_ident = out.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0 and engine_ident != main_ident
    assert ENGINE.ident == parent


@pytest.fixture(scope="module")
def tiny_chat(embedded):
    """A 3-layer random Llama that speaks through the embedded model's tokenizer (prompts are text)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from clasp_core.model import from_modules

    torch.manual_seed(0)
    tok = embedded.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=embedded.eos_ids[0], bos_token_id=1, tie_word_embeddings=True)
    return from_modules(LlamaForCausalLM(cfg), tokenizer=tok, name="tiny-llama")


@pytest.mark.integration
def test_the_apps_runs_happen_in_the_thread_that_loaded_the_model(monkeypatch, tiny_chat, page):
    """Load, warm-up and two runs driven through the app's handler: all torch work in one thread."""
    from clasp_core.decoding import GenConfig
    from ui.serving import handlers

    tiny = tiny_chat

    threads = {"load": set(), "generate": set(), "events": set()}
    generate = handlers.generate

    def load_model(spec, device, dtype=None, progress=None, guard=None):
        threads["load"].add(threading.get_ident())
        return tiny

    def recorded_generate(*args, **kwargs):
        threads["generate"].add(threading.get_ident())
        for event in generate(*args, **kwargs):
            threads["events"].add(threading.get_ident())
            yield event

    from ui.serving.models import AppModels, Policy

    cache = AppModels("tiny-spec", handlers.APP.models.device, policy=Policy.from_env("*"), loader=load_model)
    monkeypatch.setattr(handlers.APP, "models", cache)
    monkeypatch.setattr(handlers, "generate", recorded_generate)
    for seed in (1, 2):                            # the second run reuses the model in memory
        outs = list(handlers.run("Say hi.", "tiny-spec", 1, 3, 0.3, 1, 0.0, 1.0, seed, 6, False))
        status = outs[-1][handlers.APP.components["status"]]
        assert status.startswith("Done.") and "tiny-llama" in status
    assert list(cache.models) == [("tiny-spec", cache.device, "float32")]
    assert len(threads["load"]) == 1 and threads["events"]
    assert threads["load"] == threads["generate"] == threads["events"] == {ENGINE.ident}
    assert ENGINE.ident != threading.get_ident()

    with pytest.raises(handlers.gr.Error, match="seed must be a whole number from 0 to 2\\*\\*63 - 1"):
        list(handlers.run("Say hi.", "tiny-spec", 1, 3, 0.3, 1, 0.0, 1.0, 2**70, 6, False))
    with pytest.raises(handlers.gr.Error, match="seed must be a whole number"):
        list(handlers.run("Say hi.", "tiny-spec", 1, 3, 0.3, 1, 0.0, 1.0, float("inf"), 6, False))
    assert GenConfig(seed=2**63 - 1).resolved(tiny.num_layers).seed == 2**63 - 1

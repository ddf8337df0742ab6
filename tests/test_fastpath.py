"""The static-shape path (the GPU fast path's math) against the ordinary path; graphs on CUDA only."""
import pytest
import torch

from clasp_core.backends.cuda_static import BUCKETS, StaticSteps, bucket_for, buckets_upto
from clasp_core.decoding import GenConfig, generate
from clasp_core.model import from_modules
from clasp_core.runner import Runner
from tests.conftest import tiny_llama
from tests.test_decoding import PROMPT, hf_greedy


def pair(model, device="cpu"):
    eager = Runner(model, capacity=64, static=False)
    static = Runner(model, capacity=64, static=True)
    return eager, static


def both(runners, *args, **kw):
    return [r.forward(*args, **kw) for r in runners]


def test_buckets():
    assert [bucket_for(t) for t in (1, 2, 3, 5, 9, 32, 33)] == [1, 2, 4, 8, 16, 32, None]
    assert buckets_upto(9) == (1, 2, 4, 8, 16) and buckets_upto(1) == (1,)
    assert buckets_upto(100) == BUCKETS                    # K+1 past the largest bucket: capture them all


def test_static_path_matches_ordinary_path_step_by_step():
    model = tiny_llama()
    runners = pair(model)
    assert runners[1].fast is not None and runners[1].capacity >= 64 + 32
    both(runners, torch.tensor([3, 4, 5, 6]), 0)                                 # prefill: ordinary path in both
    a, b = both(runners, torch.tensor([7]), 4, last_only=True)                    # decode step
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    a, b = both(runners, torch.tensor([8]), 5, {1, 3}, last_only=True)           # draft step with skips
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    (a, ha), (b, hb) = both(runners, torch.tensor([8, 9, 10]), 5, hidden=True)    # verify 3 tokens (bucket 4)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ha, hb, rtol=1e-5, atol=1e-5)
    for r in runners:
        r.rollback(6)
    a, b = both(runners, torch.tensor([11, 12]), 6)                               # after a rollback
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert runners[1].prepare(9) == 0.0                                           # no graphs on a CPU


def test_greedy_clasp_on_the_static_path_equals_generate():
    model = tiny_llama()
    model.generation_config.eos_token_id = None
    lm = from_modules(model)
    lm.runner = Runner(model, static=True)
    done = list(generate(lm, None, GenConfig(num_skip=2, draft_len=5, det=0.0, max_new_tokens=40), "clasp",
                         prompt_ids=PROMPT))[-1]
    assert done.output_ids == hf_greedy(lm, 40) and done.drafted > 0


@pytest.mark.parametrize("method,K,T", [("vanilla", 4, 0.0), ("clasp", 31, 0.0), ("clasp", 40, 0.0),
                                         ("clasp", 6, 0.8)])
def test_static_path_gives_the_ordinary_paths_tokens(method, K, T):
    """Vanilla, a 32-token verify bucket, blocks past the largest bucket (ordinary path), sampling."""
    model = tiny_llama()
    model.generation_config.eos_token_id = None
    outs = []
    for static in (False, True):
        lm = from_modules(model)
        lm.runner = Runner(model, static=static)
        cfg = GenConfig(num_skip=1, draft_len=K, det=0.0, loi=2, temperature=T, seed=3, max_new_tokens=45)
        outs.append(list(generate(lm, None, cfg, method, prompt_ids=PROMPT))[-1].output_ids)
    assert outs[0] == outs[1]
    if T == 0:
        assert outs[0] == hf_greedy(lm, 45)


class FakeGraph:
    """Stands in for torch.cuda.CUDAGraph on a CPU: replay runs the recorded layer step."""

    def __init__(self, fast, i, T):
        self.replay = lambda: fast.layer_step(i, T)


def cpu_graphs(runner, monkeypatch, fail=False):
    """Drive the capture bookkeeping on a CPU: record() warms up for real (it changes the state,
    which capture() must put back) and returns a fake graph, or raises like a failed capture."""
    fast = runner.fast
    fast.use_graphs = True

    def record(i, T):
        fast.layer_step(i, T)
        fast.layer_step(i, T)
        if fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        return FakeGraph(fast, i, T)
    monkeypatch.setattr(fast, "record", record)


def test_capture_bookkeeping_leaves_no_trace_and_replays_any_skip_set(monkeypatch):
    model = tiny_llama()
    eager, graphs = pair(model)
    cpu_graphs(graphs, monkeypatch)
    for r in (eager, graphs):
        r.forward(torch.tensor([3, 4, 5, 6]), 0)
    assert graphs.prepare(5) > 0 and graphs.graphs == 6 * 4          # 6 layers x buckets 1, 2, 4, 8
    assert graphs.prepare(5) == 0.0                                   # already captured
    for skip in (set(), {0, 2}, {1, 3, 4}):
        for r in (eager, graphs):
            r.rollback(4)
        a = eager.forward(torch.tensor([7, 8, 9]), 4, skip)
        b = graphs.forward(torch.tensor([7, 8, 9]), 4, skip)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    a, b = (r.forward(torch.tensor([1] * 12), 7, {5}, last_only=True) for r in (eager, graphs))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)            # bucket 16: captured lazily
    assert graphs.graphs == 6 * 4 + 5 and graphs.capture_s > 0


def test_a_failed_capture_falls_back_to_the_static_steps(monkeypatch):
    model = tiny_llama()
    eager, graphs = pair(model)
    cpu_graphs(graphs, monkeypatch, fail=True)
    for r in (eager, graphs):
        r.forward(torch.tensor([3, 4, 5, 6]), 0)
    with pytest.warns(UserWarning, match="capture failed"):
        graphs.prepare(9)
    assert not graphs.fast.use_graphs and graphs.graphs == 0
    a, b = (r.forward(torch.tensor([7, 8]), 4, {2}) for r in (eager, graphs))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_growing_the_cache_starts_a_fresh_static_path():
    model = tiny_llama()
    r = Runner(model, capacity=16, static=True)
    first, cap = r.fast, r.capacity
    r.allocate(cap)                                                   # fits: keeps buffers (and graphs)
    assert r.fast is first
    r.allocate(cap + 1)
    assert r.fast is not first and r.fast.capacity == r.capacity > cap
    assert isinstance(r.fast, StaticSteps)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graphs_replay_any_skip_set():
    model = tiny_llama().cuda()
    eager = Runner(model, capacity=64, static=False)
    graphs = Runner(model, capacity=64)
    assert graphs.fast is not None and graphs.fast.use_graphs
    assert graphs.prepare(9) > 0
    for r in (eager, graphs):
        r.forward(torch.tensor([3, 4, 5, 6], device="cuda"), 0)
    for skip in (set(), {0, 2}, {1, 3, 4}):
        for r in (eager, graphs):
            r.rollback(4)
        a = eager.forward(torch.tensor([7, 8, 9], device="cuda"), 4, skip)
        b = graphs.forward(torch.tensor([7, 8, 9], device="cuda"), 4, skip)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_greedy_clasp_with_cuda_graphs_gives_the_ordinary_paths_tokens():
    model = tiny_llama().cuda()
    model.generation_config.eos_token_id = None
    outs = []
    for static in (False, None):                      # None: the default on CUDA, graphs on
        lm = from_modules(model)
        lm.runner = Runner(model, static=static)
        events = list(generate(lm, None, GenConfig(num_skip=2, draft_len=5, det=0.0, max_new_tokens=40),
                               "clasp", prompt_ids=PROMPT))
        outs.append(events[-1].output_ids)
    assert lm.runner.graphs > 0 and events[0].setup["graph_capture_s"] > 0
    assert outs[0] == outs[1]


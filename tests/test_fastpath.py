"""The static-shape path (the GPU fast path's math) against the ordinary path; graphs on CUDA only."""
import pytest
import torch

from clasp_core.decoding import GenConfig, generate
from clasp_core.fastpath import bucket_for
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
    lm._runner = Runner(model, static=True)
    done = list(generate(lm, None, GenConfig(num_skip=2, draft_len=5, det=0.0, max_new_tokens=40), "clasp",
                         prompt_ids=PROMPT))[-1]
    assert done.output_ids == hf_greedy(lm, 40) and done.drafted > 0


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

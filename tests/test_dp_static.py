"""The fixed-shape layer DP and the DP that rides a verification, against the eager reference DP.

Equality: the skip flags (hence every skip set) exactly; D within 1e-6 absolute (fp32). D is not bitwise
the reference's: the fixed shape runs M candidate rows at every layer and attends over the whole cache,
where the reference runs min(i - 1, M) rows over the used slots, and a one-row or a longer-keyed
attention rounds its last bit differently on a CPU."""
import math

import pytest
import torch

from clasp_core import dp_static
from clasp_core.decoding import GenConfig, generate
from clasp_core.layer_dp import choose_skip_set
from clasp_core.model import from_modules
from clasp_core.runner import Runner
from clasp_core.trace import LayerChoice, Round
from tests.conftest import tiny_llama
from tests.test_decoding import PROMPT, hf_greedy

IDS = [3, 14, 15, 9, 26, 5, 7, 8]
ATOL = 1e-6


def prefilled(layers: int, seed: int = 0, ids=IDS, packed: bool = True, monkeypatch=None):
    if not packed:
        monkeypatch.setenv("CLASP_CPU_PACKED", "0")
    runner = Runner(tiny_llama(layers=layers, seed=seed), capacity=64)
    _, hs = runner.forward(torch.tensor(ids), 0, hidden=True)
    return runner, hs


def table(D) -> torch.Tensor:
    return torch.tensor([[math.nan if v is None else v for v in row] for row in D])


def assert_same_dp(ref, res):
    assert res.flags == ref.flags and res.skip == ref.skip and res.path == ref.path
    torch.testing.assert_close(table(res.D), table(ref.D), rtol=0, atol=ATOL, equal_nan=True)


@pytest.mark.parametrize("L,M,p,packed", [(6, 1, 7, True), (6, 3, 4, True), (6, 5, 7, False), (8, 4, 2, True),
                                          (12, 7, 7, False), (12, 11, 5, True)])
def test_fixed_shape_dp_equals_the_eager_dp(L, M, p, packed, monkeypatch):
    runner, hs = prefilled(L, seed=L, packed=packed, monkeypatch=monkeypatch)
    runner.rollback(p + 1)                                  # the token at p is the newest verified one
    xs = hs[:, p]
    ref = choose_skip_set(runner, xs, p, M)
    res = dp_static.static_dp(runner, M).choose(xs, p)
    assert_same_dp(ref, res)
    assert runner.length == p + 1                           # the candidates' K/V were scratch
    again = dp_static.static_dp(runner, M).choose(xs, p)    # the buffers are reused: the same table
    assert again.D == res.D and again.flags == res.flags


def test_the_dp_switch_picks_the_fixed_shape_path_only_where_asked(monkeypatch):
    runner, hs = prefilled(6)
    xs, p = hs[:, -1], len(IDS) - 1
    assert not dp_static.wanted(runner)                     # a CPU: the eager DP by default
    monkeypatch.setenv("CLASP_DP_STATIC", "1")
    assert dp_static.wanted(runner)
    res = dp_static.choose(runner, xs, p, 3)
    assert (3, runner.capacity) in runner.dp_static         # it ran the fixed-shape buffers
    assert_same_dp(choose_skip_set(runner, xs, p, 3), res)
    assert dp_static.prepare(runner, 3) == 0.0 and runner.dp_static[(3, runner.capacity)].graph is None
    with pytest.raises(ValueError, match="cache too small"):
        dp_static.choose(runner, xs, 60, 5)


@pytest.mark.parametrize("L,M,T,packed", [(6, 3, 1, True), (6, 5, 4, True), (8, 2, 3, False), (12, 9, 9, True)])
def test_the_dp_riding_a_verification_equals_the_eager_dp_and_leaves_the_verification_as_it_was(
        L, M, T, packed, monkeypatch):
    runner, hs = prefilled(L, seed=L + 1, packed=packed, monkeypatch=monkeypatch)
    pos = len(IDS)
    xs = hs[:, pos - 1]                                     # the newest verified token, at pos - 1
    ref_dp = choose_skip_set(runner, xs, pos - 1, M)
    block = torch.tensor([11, 12, 13, 21, 22, 23, 31, 32, 33][:T])
    ref_logits, ref_hs = runner.forward(block, pos, hidden=True)
    ref_k = runner.cache.k[L - 1][:, :, pos:pos + T].clone()
    runner.rollback(pos)
    logits, states, res = dp_static.verify_with_dp(runner, block, pos, xs, M, hidden=True)
    assert_same_dp(ref_dp, res)
    assert res.seconds == 0.0                               # not timed apart from the verification
    assert runner.length == pos + T
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(states, ref_hs, rtol=0, atol=1e-5)
    torch.testing.assert_close(runner.cache.k[L - 1][:, :, pos:pos + T], ref_k, rtol=0, atol=1e-5)
    runner.rollback(pos)
    y, none, _ = dp_static.verify_with_dp(runner, block, pos, xs, M, head=False)
    assert none is None
    with torch.inference_mode():
        torch.testing.assert_close(runner.verify_logits(y), ref_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("M,K,loi", [(1, 4, 1), (3, 8, 1), (2, 3, 4), (5, 2, 2)])
def test_greedy_clasp_fused_is_token_identical_to_generate(tiny, M, K, loi):
    tiny.model.generation_config.eos_token_id = None
    cfg = GenConfig(num_skip=M, draft_len=K, loi=loi, det=0.0, max_new_tokens=40, strategy="clasp-fused")
    events = list(generate(tiny, None, cfg, "clasp", prompt_ids=PROMPT))
    done = events[-1]
    assert done.output_ids == hf_greedy(tiny, 40) and done.drafted > 0
    choices = [e for e in events if isinstance(e, LayerChoice)]
    rounds = [e for e in events if isinstance(e, Round)]
    assert not choices[0].fused and choices[0].round == 0    # the prompt's set: a DP of its own
    fused = choices[1:]
    assert fused and all(c.fused and c.seconds == 0.0 and len(c.skip) == M and c.D for c in fused)
    assert done.dp_calls == len(choices)
    # one round staler than clasp: the set from round r's verification is for the token before round r,
    # and the rounds between two choices are about LOI apart
    for c in fused:
        before = rounds[c.round - 1]
        assert c.position == len(PROMPT) + before.start - 2      # the token before its verified block
    gaps = [b.round - a.round for a, b in zip(choices[1:], choices[2:])]
    assert all(g == loi for g in gaps)


def test_fused_choices_equal_the_eager_dp_on_the_same_states():
    """Re-run each fused choice's DP eagerly on the same token, prefix and states (a fresh full forward
    of the context up to and including that token) and compare the tables."""
    model = tiny_llama(layers=6, seed=3)
    model.generation_config.eos_token_id = None
    lm = from_modules(model)
    cfg = GenConfig(num_skip=3, draft_len=3, loi=1, det=0.0, max_new_tokens=24, strategy="clasp-fused")
    events = list(generate(lm, None, cfg, "clasp", prompt_ids=PROMPT))
    context = PROMPT + events[-1].output_ids
    runner = Runner(model, capacity=64)
    fused = [e for e in events if isinstance(e, LayerChoice) and e.fused]
    assert len(fused) > 3
    for c in fused:
        _, hs = runner.forward(torch.tensor(context[:c.position + 1]), 0, hidden=True, last_only=True)
        ref = choose_skip_set(runner, hs[:, -1], c.position, 3)
        assert c.flags == ref.flags and c.skip == ref.skip
        torch.testing.assert_close(table(c.D), table(ref.D), rtol=0, atol=1e-5, equal_nan=True)


# ---- on a GPU (gpu_check's tests step runs these): the captured graph against the eager DP ----------------
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="the DP's graph needs a CUDA GPU")


@CUDA
def test_cuda_graphed_dp_equals_the_eager_dp():
    """One graph per M, replayed at two positions (p is a device scalar): the eager DP's flags, D within 1e-5."""
    runner = Runner(tiny_llama(layers=8).cuda(), capacity=64)
    _, hs = runner.forward(torch.tensor(IDS, device="cuda"), 0, hidden=True)
    for M in (1, 3, 7):
        runner.rollback(len(IDS))
        assert dp_static.prepare(runner, M) > 0 and runner.length == len(IDS)
        dp = runner.dp_static[(M, runner.capacity)]
        assert dp.failed is None and dp.graph is not None
        for p in (len(IDS) - 1, len(IDS)):
            if p == len(IDS):                              # one more verified token: the next position
                _, more = runner.forward(torch.tensor([40], device="cuda"), p, hidden=True)
                xs = more[:, -1]
            else:
                xs = hs[:, p]
            ref = choose_skip_set(runner, xs, p, M)
            res = dp.choose(xs, p)
            assert res.flags == ref.flags and res.skip == ref.skip
            torch.testing.assert_close(table(res.D), table(ref.D), rtol=0, atol=1e-5, equal_nan=True)


@CUDA
def test_clasp_and_clasp_fused_on_cuda_are_token_identical_to_generate():
    model = tiny_llama().cuda()
    model.generation_config.eos_token_id = None
    ref = model.generate(torch.tensor([PROMPT], device="cuda"), max_new_tokens=40, do_sample=False,
                         eos_token_id=None, pad_token_id=0)[0, len(PROMPT):].tolist()
    lm = from_modules(model)
    for strategy in ("clasp", "clasp-fused"):
        cfg = GenConfig(num_skip=2, draft_len=5, det=0.0, max_new_tokens=40, strategy=strategy)
        events = list(generate(lm, None, cfg, "clasp", prompt_ids=PROMPT))
        assert events[-1].output_ids == ref
        if strategy == "clasp":                            # the DP's graph, captured before the clock
            assert events[0].params["dp_capture_s"] > 0
        else:
            assert any(isinstance(e, LayerChoice) and e.fused for e in events)

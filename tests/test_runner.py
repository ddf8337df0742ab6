"""The layer-wise runner and its KV cache against transformers' own forward (tiny models)."""
import pytest
import torch

from clasp_core.backends.cpu import norm as packed_norm
from clasp_core.backends.cpu import rotate
from clasp_core.runner import Runner
from tests.conftest import tiny_llama


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def test_runner_without_skips_matches_hf_logits():
    model = tiny_llama(kv_heads=2)
    ids = [5, 17, 3, 44, 60, 8, 9, 11]
    runner = Runner(model, capacity=32)
    prefill = runner.forward(torch.tensor(ids[:5]), 0)
    steps = [runner.forward(torch.tensor([t]), 5 + n)[-1] for n, t in enumerate(ids[5:])]
    ours = torch.cat([prefill, torch.stack(steps)])
    torch.testing.assert_close(ours, hf_logits(model, ids), rtol=1e-4, atol=1e-4)
    assert runner.length == len(ids)


def test_hidden_states_are_raw_layer_outputs():
    model = tiny_llama()
    ids = torch.tensor([4, 9, 33, 2])
    runner = Runner(model, capacity=16)
    _, hs = runner.forward(ids, 0, hidden=True)
    with torch.no_grad():
        ref = model(ids[None], output_hidden_states=True).hidden_states
    L = model.config.num_hidden_layers
    assert hs.shape == (L + 1, 4, 64)
    for i in range(L):  # transformers' last entry is after the final norm: compare the raw ones
        torch.testing.assert_close(hs[i], ref[i][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.model.norm(hs[L]), ref[L][0], rtol=1e-4, atol=1e-4)
    last = Runner(model, capacity=16).forward(ids, 0, hidden=True, last_only=True)[1]
    assert last.shape == (L + 1, 1, 64)                          # the DP needs only the last token's states
    torch.testing.assert_close(last[:, 0], hs[:, -1])


def test_skipped_layers_pass_hidden_through_and_write_no_kv():
    model = tiny_llama()
    runner = Runner(model, capacity=16)
    runner.forward(torch.tensor([3, 4, 5]), 0)
    before = [k[:, :, 3].clone() for k in runner.cache.k]
    _, hs = runner.forward(torch.tensor([6]), 3, skip={1, 4}, hidden=True)
    torch.testing.assert_close(hs[2], hs[1])
    torch.testing.assert_close(hs[5], hs[4])
    for i in range(runner.num_layers):
        changed = not torch.equal(before[i], runner.cache.k[i][:, :, 3])
        assert changed == (i not in {1, 4})


def test_rollback_is_as_if_rejected_tokens_were_never_seen():
    model = tiny_llama()
    runner = Runner(model, capacity=32)
    runner.forward(torch.tensor([7, 8, 9]), 0)
    runner.forward(torch.tensor([10, 11, 12, 13]), 3, skip={2})   # a "draft" that gets rejected
    runner.forward(torch.tensor([50, 51]), 3)                      # verification of two other tokens
    runner.rollback(4)                                             # keep only 50
    after = runner.forward(torch.tensor([60, 61]), 4)
    fresh = Runner(model, capacity=32)
    ref = fresh.forward(torch.tensor([7, 8, 9, 50, 60, 61]), 0)[-2:]
    torch.testing.assert_close(after, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after, hf_logits(model, [7, 8, 9, 50, 60, 61])[-2:], rtol=1e-4, atol=1e-4)


def test_packed_dp_candidates_equal_one_at_a_time():
    model = tiny_llama(layers=5)
    runner = Runner(model, capacity=32)
    runner.forward(torch.tensor([3, 14, 15, 9, 26, 5]), 0)        # prefix; the token at p=5 is cached too
    p = 5
    torch.manual_seed(1)
    cands = torch.randn(4, 64)
    for layer in (0, 3):
        packed = runner.layer_candidates(layer, cands, p)
        single = torch.cat([runner.layer_candidates(layer, cands[c:c + 1], p) for c in range(4)])
        torch.testing.assert_close(packed, single, rtol=1e-5, atol=1e-5)
        assert runner.length == p + 1                               # the scratch K/V is not kept


def test_dp_candidate_sees_prefix_before_p_and_itself_at_position_p():
    """Candidate = the token's own embedding at layer 0 -> equals a fresh full run's layer-0 output at p."""
    model = tiny_llama(layers=3)
    ids = [3, 14, 15, 9, 26]
    runner = Runner(model, capacity=32)
    _, hs = runner.forward(torch.tensor(ids), 0, hidden=True)
    p = len(ids) - 1
    out = runner.layer_candidates(0, hs[0, p:p + 1], p)
    torch.testing.assert_close(out[0], hs[1, p], rtol=1e-5, atol=1e-5)
    # the cached K/V at slot p still holds the full model's values
    runner2 = Runner(model, capacity=32)
    runner2.forward(torch.tensor(ids), 0)
    torch.testing.assert_close(runner.cache.k[0][:, :, p], runner2.cache.k[0][:, :, p])


def tiny_of(kind: str):
    """Small random models of the other supported architectures."""
    import transformers as tf

    common = dict(vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, attn_implementation="sdpa")
    torch.manual_seed(0)
    if kind == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**common)).eval()        # q/k/v projections with bias
    if kind == "qwen3":
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(head_dim=16, **common)).eval()   # per-head q/k norms
    if kind == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(sliding_window=None, **common)).eval()
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "mistral"])
def test_other_llama_family_architectures_match_hf(kind):
    model = tiny_of(kind)
    ids = [5, 17, 3, 44, 60, 8, 9]
    runner = Runner(model, capacity=32)
    prefill = runner.forward(torch.tensor(ids[:4]), 0)
    steps = [runner.forward(torch.tensor([t]), 4 + n)[-1] for n, t in enumerate(ids[4:])]
    torch.testing.assert_close(torch.cat([prefill, torch.stack(steps)]), hf_logits(model, ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel", [True, False], ids=["own-kernel", "torch"])
@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_cpu_packed_weights_give_the_modules_results(kind, kernel, monkeypatch):
    """Short blocks on a CPU multiply by fused q|k|v and gate|up weights (the engine's own kernel on [out, in],
    else torch on [in, out] copies) in one lean layer call (not Qwen3's, whose per-head q/k norms run as
    modules); same numbers as the modules."""
    from clasp_core import cpu_kernel

    if not kernel:
        monkeypatch.setattr(cpu_kernel, "kernel", lambda: None)
    elif cpu_kernel.kernel() is None:
        pytest.skip(f"no CPU kernel here: {cpu_kernel.why_off()}")
    model = tiny_llama() if kind == "llama" else tiny_of(kind)      # qwen2: q/k/v with biases
    packed = Runner(model, capacity=64)
    monkeypatch.setenv("CLASP_CPU_PACKED", "0")
    plain = Runner(model, capacity=64)
    assert packed.packed is not None and plain.packed is None
    assert (packed.packed.kernel is not None) == kernel
    longest = packed.packed.max_tokens
    assert packed.backend.lean(1) == (kind != "qwen3") and not packed.backend.lean(longest + 1)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, model.config.vocab_size, (longest + 1 + 6 + longest,), generator=g)
    start = longest + 1                                   # a prompt longer than a short block: modules in both
    torch.testing.assert_close(packed.forward(ids[:start], 0), plain.forward(ids[:start], 0))
    for T in (1, 2, 3, longest):                          # decode / draft / verification blocks
        block = ids[start:start + T]
        a, ha = packed.forward(block, start, skip={1}, hidden=True)
        b, hb = plain.forward(block, start, skip={1}, hidden=True)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ha, hb, rtol=1e-5, atol=1e-5)
        start += T
    for i in (0, 2):
        for got, want in ((packed.cache.k[i], plain.cache.k[i]), (packed.cache.v[i], plain.cache.v[i])):
            torch.testing.assert_close(got[:, :, :start], want[:, :, :start], rtol=1e-5, atol=1e-5)


def test_lean_rope_and_norm_are_bitwise_those_of_transformers():
    """The lean layer's RoPE (halves swapped times a sign-folded sine) and fused RMSNorm round as HF's."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model = tiny_llama()
    runner = Runner(model, capacity=32)
    pk = runner.packed
    torch.manual_seed(1)
    T, hd = 3, pk.head_dim
    qk = torch.randn(T, pk.n_q + pk.n_kv, hd)
    cos, sin = runner.rotary(qk, torch.arange(7, 7 + T)[None])
    ref_q, ref_k = apply_rotary_pos_emb(qk[None, :, :pk.n_q].transpose(1, 2), qk[None, :, pk.n_q:].transpose(1, 2),
                                        cos, sin)
    ours = rotate(qk, pk.rope_tables(cos, sin))
    assert torch.equal(ours[:, :pk.n_q], ref_q[0].transpose(0, 1))
    assert torch.equal(ours[:, pk.n_q:], ref_k[0].transpose(0, 1))
    x = torch.randn(1, T, runner.hidden) * 3
    norm = model.model.layers[0].input_layernorm
    assert torch.equal(packed_norm(norm, x), norm(x))


def test_kv_cache_writes_at_positions_views_up_to_an_end_and_rolls_back():
    from clasp_core.kvcache import KVCache

    cache = KVCache(n_kv=2, head_dim=4, dtype=torch.float32, devices=[torch.device("cpu")] * 3)
    assert cache.allocate(8) and not cache.allocate(6) and cache.capacity == 8
    k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    K, V = cache.update(1, torch.tensor([2, 3, 4]), k, v, end=5)
    assert K.shape == (1, 2, 5, 4)
    torch.testing.assert_close(K[:, :, 2:5], k)
    torch.testing.assert_close(cache.view(1)[1][:, :, 2:5], v)
    assert not cache.k[0].any()                                    # other layers untouched
    cache.length = 5
    cache.rollback(3)
    assert cache.length == 3
    with pytest.raises(ValueError, match="roll back"):
        cache.rollback(4)


def test_run_layers_starts_where_asked_skips_and_records_every_layer():
    """The one layer loop: the forward, the GPU path and the static search all rely on these three rules."""
    runner = Runner(tiny_llama(), capacity=8)
    L = runner.num_layers
    seen = []
    out = runner.run_layers((), lambda i, x: x + (i,), skip={2, 3}, start=1, record=seen.append)
    assert out == tuple(i for i in range(1, L) if i not in (2, 3))      # in order, from start, skips left out
    assert len(seen) == L - 1 and seen[1] == seen[2] == seen[0] == (1,)  # a skipped layer repeats its input

"""The real embedded model (SmolLM2-135M-Instruct, fp32, CPU) against transformers generate."""
import pytest
import torch

from clasp_core.decoding import GenConfig, generate
from clasp_core.prompt import encode_prompt
from clasp_core.trace import LayerChoice, Round
from tests.conftest import bench_prompts

pytestmark = pytest.mark.integration
PROMPTS = bench_prompts(per_task=1)          # one question from each of the six tasks
N = 64


def hf_generate(lm, ids, n=N):
    with torch.inference_mode():
        out = lm.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                max_new_tokens=n, do_sample=False, temperature=None, top_p=None, top_k=None,
                                pad_token_id=lm.eos_ids[0])
    return out[0, len(ids):].tolist()


class References(dict):
    """question id -> (prompt ids, generate's tokens), each computed when a test first asks for it."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def __missing__(self, qid):
        q = next(q for q in PROMPTS if q["question_id"] == qid)
        ids, _ = encode_prompt(self.lm, q["turns"][0])
        self[qid] = (ids, hf_generate(self.lm, ids))
        return self[qid]


@pytest.fixture(scope="module")
def references(embedded):
    return References(embedded)


def test_embedded_model_shape(embedded):
    assert embedded.num_layers == 30 and embedded.config.model_type == "llama"
    assert embedded.eos_ids and embedded.tokenizer.chat_template


@pytest.mark.parametrize("q", PROMPTS, ids=lambda q: q["category"])
def test_greedy_clasp_default_settings_token_identical(embedded, references, q):
    ids, ref = references[q["question_id"]]
    done = list(generate(embedded, None, GenConfig(max_new_tokens=N), "clasp", prompt_ids=ids))[-1]
    assert done.output_ids == ref


@pytest.mark.parametrize("q", PROMPTS[:4], ids=lambda q: q["category"])
def test_greedy_clasp_drafting_hard_token_identical(embedded, references, q):
    """DET 0 drafts K tokens every round, so many drafts are rejected and rolled back."""
    ids, ref = references[q["question_id"]]
    events = list(generate(embedded, None, GenConfig(num_skip=8, draft_len=6, det=0.0, loi=3, max_new_tokens=N),
                           "clasp", prompt_ids=ids))
    done = events[-1]
    assert done.output_ids == ref
    rounds = [e for e in events if isinstance(e, Round)]
    assert done.drafted > 0 and sum(len(r.drafted) - r.accepted for r in rounds) > 0   # rejections happened
    assert done.accepted > 0
    assert all(len(e.skip) == 8 for e in events if isinstance(e, LayerChoice))


@pytest.mark.parametrize("strategy", ["clasp-once", "early-exit", "random"])
def test_other_layer_choices_token_identical(embedded, references, strategy):
    """The same loop with the layers chosen another way: still exactly the full model's tokens."""
    q = PROMPTS[1]
    ids, ref = references[q["question_id"]]
    cfg = GenConfig(num_skip=8, draft_len=6, det=0.0, max_new_tokens=N, strategy=strategy, seed=4)
    events = list(generate(embedded, None, cfg, "clasp", prompt_ids=ids))
    done = events[-1]
    assert done.output_ids == ref
    assert done.drafted > done.accepted > 0                            # drafted, some accepted, some rejected
    choices = [e for e in events if isinstance(e, LayerChoice)]
    assert len(choices) == 1 and choices[0].strategy == strategy and len(choices[0].skip) == 8
    if strategy == "early-exit":
        assert choices[0].skip == list(range(22, 30))


def test_vanilla_engine_token_identical(embedded, references):
    q = PROMPTS[0]
    ids, ref = references[q["question_id"]]
    assert list(generate(embedded, None, GenConfig(max_new_tokens=N), "vanilla", prompt_ids=ids))[-1].output_ids == ref


def test_sampled_clasp_on_the_real_model(embedded):
    cfg = GenConfig(num_skip=8, det=0.0, temperature=0.7, top_p=0.9, seed=11, max_new_tokens=32)
    a = list(generate(embedded, "Name three colours.", cfg, "clasp"))[-1]
    b = list(generate(embedded, "Name three colours.", cfg, "clasp"))[-1]
    assert a.output_ids == b.output_ids and a.new_tokens > 0 and a.text.strip()
    assert a.drafted > a.accepted > 0                                  # sampled drafts, accepted and rejected


def test_too_long_prompt_on_the_real_model(embedded):
    with pytest.raises(ValueError, match="context of 8192"):
        generate(embedded, "word " * 9000, GenConfig(), "clasp")


@pytest.mark.parametrize("q", PROMPTS[:2], ids=lambda q: q["category"])
def test_greedy_clasp_fused_token_identical(embedded, references, q):
    """The layer DP riding each verification (clasp-fused), default M, LOI 1, and drafting hard."""
    ids, ref = references[q["question_id"]]
    for cfg in (GenConfig(max_new_tokens=N, strategy="clasp-fused"),
                GenConfig(num_skip=8, draft_len=6, det=0.0, loi=1, max_new_tokens=N, strategy="clasp-fused")):
        events = list(generate(embedded, None, cfg, "clasp", prompt_ids=ids))
        assert events[-1].output_ids == ref
        fused = [e for e in events if isinstance(e, LayerChoice) and e.fused]
        assert fused and all(len(e.skip) == cfg.resolved(30).num_skip for e in fused)


@pytest.mark.parametrize("M", [8, 13])
def test_fixed_shape_and_fused_dp_equal_the_eager_dp_on_the_embedded_model(embedded, M):
    """Flags (so every skip set) exactly, D within 1e-5 (fp32; the shapes round the last bits differently)."""
    from clasp_core.dp_static import static_dp, verify_with_dp
    from clasp_core.layer_dp import choose_skip_set

    ids, _ = encode_prompt(embedded, PROMPTS[2]["turns"][0])
    runner = embedded.runner
    runner.allocate(len(ids) + 32)
    _, hs = runner.forward(torch.tensor(ids), 0, hidden=True, last_only=True)
    p, xs = len(ids) - 1, hs[:, -1]
    ref = choose_skip_set(runner, xs, p, M)
    nan = lambda D: torch.tensor([[float("nan") if v is None else v for v in row] for row in D])  # noqa: E731
    fixed = static_dp(runner, M).choose(xs, p)
    _, _, fused = verify_with_dp(runner, torch.tensor([ids[-1], 42, 43]), p + 1, xs, M)
    for res in (fixed, fused):
        assert res.flags == ref.flags and res.skip == ref.skip
        torch.testing.assert_close(nan(res.D), nan(ref.D), rtol=0, atol=1e-5, equal_nan=True)

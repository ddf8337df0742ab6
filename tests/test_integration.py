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


@pytest.fixture(scope="module")
def references(embedded):
    refs = {}
    for q in PROMPTS:
        ids, _ = encode_prompt(embedded, q["turns"][0])
        refs[q["question_id"]] = (ids, hf_generate(embedded, ids))
    return refs


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

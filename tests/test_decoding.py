"""Decoding loops on tiny random models: lossless greedy, the sampling rule, bad input."""
import itertools
import math
import threading

import pytest
import torch

from clasp_core import sampling, trace
from clasp_core.decoding import GenConfig, generate
from clasp_core.model import from_modules, load_model
from clasp_core.output import Output
from clasp_core.sampling import greedy_accept, speculative_accept, warp
from clasp_core.trace import Done, LayerChoice, Prefill, Round
from tests.conftest import tiny_llama

PROMPT = [1, 5, 17, 3, 44, 60, 8]


def run(lm, method="clasp", **kw):
    cfg = GenConfig(**{"max_new_tokens": 40, "det": 0.0, **kw})
    return list(generate(lm, None, cfg, method, prompt_ids=PROMPT))


def hf_greedy(lm, n):
    out = lm.model.generate(torch.tensor([PROMPT]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                            pad_token_id=0)
    return out[0, len(PROMPT):].tolist()


@pytest.mark.parametrize("M,K,loi", [(1, 4, 1), (3, 8, 1), (2, 3, 4), (5, 2, 2)])
def test_greedy_clasp_is_token_identical_to_transformers_generate(tiny, M, K, loi):
    tiny.model.generation_config.eos_token_id = None     # random weights: run to the full length
    events = run(tiny, num_skip=M, draft_len=K, loi=loi)
    done = events[-1]
    assert isinstance(done, Done) and done.new_tokens == 40
    assert done.output_ids == hf_greedy(tiny, 40)
    assert done.drafted > 0                                # it really drafted
    assert run(tiny, "vanilla")[-1].output_ids == done.output_ids


def test_event_stream_shape_and_trace_round_trip(tiny):
    tiny.model.generation_config.eos_token_id = None
    events = run(tiny, num_skip=2, draft_len=4, loi=2)
    assert isinstance(events[0], Prefill) and isinstance(events[1], LayerChoice)
    rounds = [e for e in events if isinstance(e, Round)]
    choices = [e for e in events if isinstance(e, LayerChoice)]
    done = events[-1]
    # the output is the prefill's token followed by what each round emitted, in order
    rebuilt = [events[0].first_token] + [t for r in rounds for t in r.emitted]
    assert rebuilt == done.output_ids
    for r in rounds:
        assert 0 <= r.accepted <= len(r.drafted) <= 4
        assert r.emitted[:r.accepted] == r.drafted[:r.accepted]
        assert r.next_kind == ("bonus" if r.accepted == len(r.drafted) else "corrected")
        assert len(r.skip) == 2 and len(r.draft_probs) == len(r.drafted)
        # p up to the first rejection
        assert min(r.accepted + 1, len(r.drafted)) <= len(r.target_probs) <= len(r.drafted)
    assert len(choices) == 1 + (len(rounds) - 1) // 2     # after prefill, then every 2nd round
    assert done.rounds == len(rounds) and done.accepted == sum(r.accepted for r in rounds)
    assert done.tau == pytest.approx((done.new_tokens - 1) / done.rounds)
    again = trace.loads(trace.dumps(events))
    assert [trace.to_dict(e) for e in again] == [trace.to_dict(e) for e in events]


def test_rounds_count_their_host_synchronisations_where_asked(tiny, monkeypatch):
    """Nothing is counted unless CLASP_COUNT_SYNCS=1; then every read of a tensor's value counts (on a GPU
    each waits for the device): each draft step reads its top-1 probability, its token and q(x)."""
    tiny.model.generation_config.eos_token_id = None
    assert all(e.syncs is None for e in run(tiny, num_skip=2, draft_len=4) if isinstance(e, Round))
    monkeypatch.setenv("CLASP_COUNT_SYNCS", "1")
    events = run(tiny, num_skip=2, draft_len=4)
    rounds = [e for e in events if isinstance(e, Round)]
    assert all(r.syncs >= 3 * len(r.drafted) + 1 for r in rounds)         # + the verification's verdict
    assert events[-1].output_ids == hf_greedy(tiny, 40)
    again = trace.loads(trace.dumps(events))
    assert [e.syncs for e in again if isinstance(e, Round)] == [r.syncs for r in rounds]


def test_skipping_nothing_accepts_every_draft(tiny):
    tiny.model.generation_config.eos_token_id = None
    done = run(tiny, num_skip=0, draft_len=5)[-1]
    assert done.accepted == done.drafted > 0


def test_stops_at_eos_and_includes_it(tiny):
    ref = hf_greedy(tiny, 40)
    eos = ref[10]
    tiny.model.generation_config.eos_token_id = eos
    try:
        done = run(tiny, num_skip=2)[-1]
    finally:
        tiny.model.generation_config.eos_token_id = None
    first = ref.index(eos)
    assert done.stop_reason == "eos" and done.output_ids == ref[:first + 1]


def test_stop_event_ends_the_run(tiny):
    stop = threading.Event()
    stop.set()
    done = list(generate(tiny, None, GenConfig(max_new_tokens=30), "clasp", stop, prompt_ids=PROMPT))[-1]
    assert done.stop_reason == "stopped" and done.new_tokens < 30


# ---- sampling ---------------------------------------------------------------------------
def test_greedy_accept_rule():
    assert greedy_accept([4, 5, 6], [4, 5, 9, 1]) == (2, 9, "corrected")
    assert greedy_accept([4, 5], [4, 5, 7]) == (2, 7, "bonus")
    assert greedy_accept([], [3]) == (0, 3, "bonus")


def test_speculative_sampling_reproduces_the_target_distribution():
    """Draw x ~ q, apply the rule; the emitted first token must be distributed as p."""
    g = torch.Generator().manual_seed(1234)
    V = 6
    p = torch.tensor([0.40, 0.25, 0.15, 0.10, 0.07, 0.03])
    q = torch.tensor([0.05, 0.30, 0.30, 0.05, 0.20, 0.10])
    n = 40000
    counts = torch.zeros(V)
    for _ in range(n):
        x = int(torch.multinomial(q, 1, generator=g))
        acc, nxt, _ = speculative_accept([x], q[None], torch.stack([p, p]), g)
        counts[x if acc == 1 else nxt] += 1
    expected = p * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5                      # chi-square, 5 dof, p = 0.001


def test_speculative_acceptance_rate_is_overlap_of_p_and_q():
    g = torch.Generator().manual_seed(7)
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.2, 0.6])
    n, accepted = 20000, 0
    for _ in range(n):
        x = int(torch.multinomial(q, 1, generator=g))
        accepted += speculative_accept([x], q[None], torch.stack([p, p]), g)[0]
    assert accepted / n == pytest.approx(float(torch.minimum(p, q).sum()), abs=0.015)


def test_warp_top_p_keeps_smallest_prefix():
    probs = warp(torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])), 1.0, top_p=0.8)
    torch.testing.assert_close(probs, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert warp(torch.tensor([1.0, 3.0, 2.0]), 0.0).tolist() == [0.0, 1.0, 0.0]


def test_sampled_run_end_to_end(tiny):
    tiny.model.generation_config.eos_token_id = None
    a = run(tiny, num_skip=2, temperature=0.8, top_p=0.95, seed=3)
    b = run(tiny, num_skip=2, temperature=0.8, top_p=0.95, seed=3)
    assert a[-1].output_ids == b[-1].output_ids           # seeded: reproducible
    assert a[-1].new_tokens == 40 and all(0 <= t < 97 for t in a[-1].output_ids)
    assert a[-1].drafted > 0
    same = run(tiny, num_skip=0, temperature=0.8, seed=3)[-1]
    assert same.accepted == same.drafted                   # p == q: every draft is accepted


# ---- end to end: the sampled output of whole CLaSp runs is distributed as the full model's ----
class TestSampledRunsAreExact:
    """A 4-token vocabulary: the exact joint law of the first three new tokens by enumeration
    (full-model probabilities, same warp), against many seeded CLaSp runs that draft two tokens
    a round with most layers skipped, so drafts are often rejected and replaced."""

    V, T, P = 4, 1.0, [1, 3, 0, 3]
    strategy = "clasp"

    @pytest.fixture(scope="class")
    def lm(self):
        model = tiny_llama(layers=6, seed=1, vocab=self.V)
        with torch.no_grad():
            model.lm_head.weight.mul_(2.0)          # peaked enough that the skipping draft often misses
        model.generation_config.eos_token_id = None
        threads = torch.get_num_threads()
        torch.set_num_threads(1)                    # tiny matrices: one thread is several times faster
        yield from_modules(model, name="tiny-4")
        torch.set_num_threads(threads)

    def exact_joint(self, model) -> dict[tuple, float]:
        n = len(self.P)
        pairs = list(itertools.product(range(self.V), repeat=2))
        with torch.no_grad():
            p = warp(model(torch.tensor([self.P + list(c) for c in pairs])).logits, self.T)
        return {(a, b, c): float(row[n - 1, a] * row[n, b] * row[n + 1, c])
                for (a, b), row in zip(pairs, p) for c in range(self.V)}

    def sample_runs(self, lm, n):
        counts, rejected, multi = {}, 0, 0
        for seed in range(n):
            cfg = GenConfig(num_skip=5, draft_len=3, det=0.0, loi=1, temperature=self.T, seed=seed, max_new_tokens=4,
                            strategy=self.strategy)
            events = list(generate(lm, None, cfg, "clasp", prompt_ids=self.P))
            key = tuple(events[-1].output_ids[:3])
            counts[key] = counts.get(key, 0) + 1
            rounds = [e for e in events if isinstance(e, Round)]
            rejected += sum(len(r.drafted) - r.accepted for r in rounds)
            multi += len(rounds[0].drafted) >= 2
        return counts, rejected, multi

    @staticmethod
    def chi_square(joint, counts, n) -> tuple[float, float]:
        """(statistic, critical value at p = 0.001); the rarest cells are pooled until each expects >= 5."""
        bins, o, e = [], 0, 0.0
        for cell in sorted(joint, key=joint.get):
            o, e = o + counts.get(cell, 0), e + joint[cell] * n
            if e >= 5:
                bins.append((o, e))
                o, e = 0, 0.0
        if e:
            last = bins.pop()
            bins.append((last[0] + o, last[1] + e))
        stat = sum((o - e) ** 2 / e for o, e in bins)
        k = len(bins) - 1                            # Wilson-Hilferty: the chi-square quantile, z = 3.09
        return stat, k * (1 - 2 / (9 * k) + 3.09 * math.sqrt(2 / (9 * k))) ** 3

    def test_matches_the_exact_distribution(self, lm):
        n = 400
        counts, rejected, multi = self.sample_runs(lm, n)
        assert multi == n and rejected > n / 4           # two-token drafts, really rejected
        stat, crit = self.chi_square(self.exact_joint(lm.model), counts, n)
        assert stat < crit

    def test_a_wrong_residual_is_caught(self, lm, monkeypatch):
        """Positive control: replace a rejected draft from p instead of norm(max(0, p - q))."""
        monkeypatch.setattr(sampling, "residual", lambda p, q: p)
        n = 300
        counts, rejected, _ = self.sample_runs(lm, n)
        assert rejected > n / 4
        stat, crit = self.chi_square(self.exact_joint(lm.model), counts, n)
        assert stat > crit


class TestSampledFusedRunsAreExact(TestSampledRunsAreExact):
    """The same check with the layer DP riding each verification (clasp-fused)."""

    strategy = "clasp-fused"
    test_a_wrong_residual_is_caught = None          # the control checks the test, once is enough

    def test_the_dp_rides_these_verifications(self, lm):
        """At LOI 1 every round after the first verifies with the DP riding it: many of those rounds choose
        tokens among the three whose law is checked."""
        rides = 0
        for seed in range(20):
            cfg = GenConfig(num_skip=5, draft_len=3, det=0.0, loi=1, temperature=self.T, seed=seed,
                            max_new_tokens=4, strategy=self.strategy)
            rides += sum(isinstance(e, Round) and e.index >= 1 and e.start <= 2
                         for e in generate(lm, None, cfg, "clasp", prompt_ids=self.P))
        assert rides >= 5


# ---- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize("kw,msg", [
    (dict(num_skip=6), "M .*between 0 and 5"),
    (dict(num_skip=-1), "M .*between 0 and 5"),
    (dict(draft_len=0), "K .*at least 1"),
    (dict(det=1.5), "DET must be in"),
    (dict(det=-0.1), "DET must be in"),
    (dict(temperature=-1.0), "temperature must be"),
    (dict(top_p=0.0), "top-p"),
    (dict(loi=0), "LOI"),
    (dict(max_new_tokens=0), "max new tokens"),
    (dict(seed=2**70), r"seed must be a whole number from 0 to 2\*\*63 - 1"),
    (dict(seed=-1), r"seed must be a whole number from 0 to 2\*\*63 - 1"),
])
def test_bad_parameters_raise_clear_value_errors(tiny, kw, msg):
    with pytest.raises(ValueError, match=msg):
        generate(tiny, None, GenConfig(**kw), prompt_ids=PROMPT)


def test_the_output_cuts_a_round_after_eos_and_at_the_token_budget():
    stop = threading.Event()
    out = Output(None, eos={2}, max_new_tokens=6, stop=stop)
    assert out.extend([7, 8]) == [7, 8] and out.finished() is None
    stop.set()
    assert out.finished() == "stopped"
    assert out.extend([9, 2, 5]) == [9, 2] and out.finished() == "eos"          # nothing after an EOS
    out = Output(None, eos={2}, max_new_tokens=3, stop=None)
    assert out.extend([4, 5, 6, 7]) == [4, 5, 6] and out.finished() == "max_new_tokens"
    assert out.text() == "4 5 6"                                 # no tokenizer: the ids


def test_the_runner_is_the_models_own_built_at_its_first_run():
    lm = from_modules(tiny_llama())
    assert lm.built_runner is None                               # listing or measuring a model builds none
    list(generate(lm, None, GenConfig(max_new_tokens=3), "vanilla", prompt_ids=PROMPT))
    runner = lm.built_runner
    assert runner is not None and lm.runner is runner
    list(generate(lm, None, GenConfig(max_new_tokens=3), "clasp", prompt_ids=PROMPT))
    assert lm.runner is runner                                   # one per model, kept from run to run


def test_the_largest_seed_samples(tiny):
    """A seed too large for 64 bits is the clear error above, not torch's overflow; the largest one runs."""
    cfg = GenConfig(num_skip=2, temperature=0.8, seed=2**63 - 1, max_new_tokens=4)
    a, b = (list(generate(tiny, None, cfg, prompt_ids=PROMPT))[-1] for _ in range(2))
    assert a.new_tokens >= 1 and a.output_ids == b.output_ids


def test_empty_and_too_long_prompts(tiny):
    with pytest.raises(ValueError, match="empty"):
        generate(tiny, None, GenConfig(), prompt_ids=[])
    with pytest.raises(ValueError, match="over this model's context of 256"):
        generate(tiny, None, GenConfig(max_new_tokens=10), prompt_ids=[5] * 250)
    with pytest.raises(ValueError, match="unknown method"):
        generate(tiny, None, GenConfig(), "medusa", prompt_ids=PROMPT)


def test_missing_model_path_and_unsupported_architecture(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_model(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(ValueError, match="not found"):
        load_model(str(tmp_path / "nope.gguf"), device="cpu")
    from transformers import GPT2Config
    GPT2Config(n_layer=2, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="unsupported architecture 'gpt2'.*llama"):
        load_model(str(tmp_path / "gpt2"), device="cpu")
    with pytest.raises(ValueError, match="not a model directory"):
        load_model(str(tmp_path), device="cpu")


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present here")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        load_model(None, device="cuda")


def test_unsupported_module_wrap():
    from transformers import GPT2Config, GPT2LMHeadModel
    with pytest.raises(ValueError, match="unsupported architecture"):
        from_modules(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2)))


def test_a_greedy_verification_takes_the_head_in_blocks_up_to_the_first_rejection():
    """backends.cpu.logits_until_rejected (the CPU backend's verify_logits): rows in blocks of head_block,
    stopping at the block holding the first rejected draft (or the bonus row); the rows it returns are those
    the head computed."""
    from clasp_core.backends.cpu import logits_until_rejected

    V = 10
    best = [3, 4, 5, 6, 7, 8]                       # the full model's argmax at each row

    def head_row(y):
        calls.append(y.shape[0])
        return torch.nn.functional.one_hot(y[:, 0].long(), V).float()

    y = torch.tensor(best, dtype=torch.float32)[:, None].repeat(1, 4)       # row i "is" its argmax
    for block, drafted, rows, shapes in (
            (2, [3, 9, 5], 2, [2]),                  # rejected at row 1: one block of two
            (2, [3, 4, 9], 4, [2, 2]),               # rejected at row 2: the second block holds it
            (2, [9, 4], 2, [2]),                     # rejected at row 0: still a block of two
            (1, [3, 9, 5], 2, [1, 1]),               # one row at a time (no kernel): as before
            (2, [3, 4, 5], 4, [2, 2])):              # all accepted: the bonus row ends it
        calls = []
        out = logits_until_rejected(head_row, y[:len(drafted) + 1], drafted, block)
        assert out.shape[0] == rows and calls == shapes
        assert out.argmax(-1).tolist() == best[:rows]

"""Prompt lookup: the n-gram matcher on hand-made sequences and against transformers' own, and the
``lookup`` / ``clasp+lookup`` draft sources in the decoding loop (lossless, greedy and sampled)."""
import random
from pathlib import Path

import pytest
import torch

import tests.test_decoding as exact
from clasp_core import decoding, trace
from clasp_core.decoding import GenConfig, generate
from clasp_core.lookup import CopyPolicy, Match, NgramIndex
from clasp_core.model import from_modules
from clasp_core.prompt import encode_prompt
from clasp_core.trace import LayerChoice, Round
from tests.conftest import bench_prompts, tiny_llama

# assets/lookup-trace.jsonl: a run of ``lookup`` and one of vanilla on a prompt the answer quotes (the
# browser test replays it and hovers a copied token); test_recorded_lookup_trace_is_what_the_engine_makes
# checks it against the engine
LOOKUP_TRACE = Path(__file__).resolve().parents[1] / "assets" / "lookup-trace.jsonl"
LOOKUP_PROMPT = ("Repeat this sentence exactly, word for word: The quick brown fox jumps over the lazy dog "
                 "near the old river bank.")
LOOKUP_CFG = GenConfig(strategy="lookup", max_new_tokens=32)


# ---- the matcher -------------------------------------------------------------------------
def test_no_match():
    assert NgramIndex([1, 2, 3, 4]).match(5) is None         # the last token never occurred before
    assert NgramIndex([7]).match(5) is None                  # one token: nothing earlier
    assert NgramIndex([1, 2, 1]).match(0) is None            # nothing asked for


def test_longest_ngram_first():
    # the 1-gram "3" occurs at 1, but the 2-gram "2 3" occurs at 4 and wins
    m = NgramIndex([9, 3, 8, 8, 2, 3, 5, 6, 2, 3]).match(4)
    assert (m.n, m.start, m.ngram, m.copied_from, m.tokens) == (2, 4, [2, 3], 6, [5, 6, 2, 3])


def test_match_at_the_end_is_cut_at_the_context_end():
    m = NgramIndex([1, 2, 3, 4, 1, 2, 3]).match(10)
    assert (m.n, m.start, m.tokens) == (3, 0, [4, 1, 2, 3])    # up to the end, never past it


def test_first_match_from_the_left_like_transformers():
    # "5 6" occurs at 0 and 3: the first one (left to right) is copied from, as transformers does
    m = NgramIndex([5, 6, 1, 5, 6, 2, 5, 6]).match(2)
    assert (m.n, m.start, m.tokens) == (2, 0, [1, 5])


def test_overlapping_matches():
    m = NgramIndex([4, 4, 4, 4]).match(5)                     # "4 4 4" at 0 overlaps the suffix at 1
    assert (m.n, m.start, m.tokens) == (3, 0, [4])
    m = NgramIndex([1, 2, 1, 2, 1]).match(5)                  # "1 2 1" at 0, copied from 3: "2 1"
    assert (m.n, m.start, m.copied_from, m.tokens) == (3, 0, 3, [2, 1])


def test_index_grows_with_the_context():
    idx = NgramIndex([1, 2, 3])
    assert idx.match(3) is None
    idx.extend([9, 1, 2])
    assert (idx.match(3).n, idx.match(3).tokens) == (2, [3, 9, 1])
    assert Match(2, 0, [1, 2], [3]).record(prompt_len=3) == dict(
        n=2, ngram=[1, 2], start=0, copied_from=2, length=1, in_prompt=True, prompt_len=3)


def test_same_proposals_as_transformers_prompt_lookup():
    """Random short-alphabet sequences: the index proposes what transformers' scan proposes."""
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    rng = random.Random(0)
    for _ in range(300):
        seq = [rng.randrange(4) for _ in range(rng.randrange(2, 30))]
        k = rng.randrange(1, 8)
        gen = PromptLookupCandidateGenerator(num_output_tokens=k, max_matching_ngram_size=3, max_length=1000)
        cand, _ = gen.get_candidates(torch.tensor([seq]))
        want = cand[0, len(seq):].tolist()
        m = NgramIndex(seq).match(k)
        assert (m.tokens if m else []) == want, seq


def test_index_extended_token_by_token_equals_index_built_at_once():
    rng = random.Random(1)
    seq = [rng.randrange(5) for _ in range(60)]
    idx = NgramIndex(seq[:3])
    for i in range(3, len(seq)):
        idx.extend([seq[i]])
        assert idx.match(4) == NgramIndex(seq[:i + 1]).match(4)


def test_auto_copies_only_what_pays():
    from clasp_core.auto import FixedPolicy

    class Measured(FixedPolicy):
        """A policy that measured a plain step (10 ms) and prices a verification by the line 1 + 0.15 k."""
        c1, beta, margin = 0.01, 0.15, 1.05

    policy = Measured(3, 5, 0.0)
    m = Match(3, 0, [1, 2, 3], [4, 5, 6, 7, 8])
    copier = CopyPolicy(auto=True)
    assert copier.length(m, policy, 1.0) >= 1                 # a fresh guess: alpha 0.5 pays
    assert CopyPolicy(auto=False).length(m, policy, 9.0) == 5    # fixed settings copy it all
    for _ in range(20):
        copier.observe(m, 5, 0, 0.02, policy)                 # never accepted ...
    assert [copier.length(m, policy, 1.0) for _ in range(8)] == [0] * 7 + [1]   # ... so only probed
    assert copier.alpha(2) == 0.5                             # other n-gram lengths keep their own count
    for _ in range(5):
        copier.observe(m, 5, 5, 0.02, policy)                 # the output copies again: so does auto
    assert copier.length(m, policy, 1.0) == 5


def test_auto_prices_copies_at_the_measured_verify_cost_and_backs_off_failed_probes():
    """A copy is priced at what verifying k drafts measured in this run (not the line 1 + beta * k), so an
    expensive long block caps the copy length; unigram matches start as poor bets; failed probes wait longer."""
    from clasp_core.auto import AutoPolicy

    auto = AutoPolicy(num_layers=30, M_max=13, K_max=8, head_share=0.2)
    assert CopyPolicy(auto=True).length(Match(3, 0, [1, 2, 3], [4, 5]), auto, 1.0) == 0   # no step measured yet
    for _ in range(4):
        auto.observe_plain(0.010)                          # c1 = 10 ms
    assert auto.r_verify(3) == pytest.approx(1 + auto.beta * 3)     # nothing measured at k = 3 yet: the line
    for k, s in ((1, 0.013), (2, 0.015), (3, 0.040), (4, 0.050)) * 2:     # a CPU: blocks of 4+ jump
        auto.observe_verify(k, s)
    assert auto.r_verify(1) == pytest.approx(1.3) and auto.r_verify(3) == pytest.approx(4.0)
    assert auto.r_verify(5) >= 5.0                         # unmeasured, but no cheaper than 4 drafts measured
    copier = CopyPolicy(auto=True)
    for _ in range(3):
        copier.observe(Match(3, 0, [1, 2, 3], [4]), 1, 1, 0.013, auto)       # trigram copies are accepted
    assert copier.alpha(3) > 0.8
    m = Match(3, 0, [1, 2, 3], [4, 5, 6, 7])
    assert copier.length(m, auto, 1.0) == 2                # 3 and 4 tokens would cost 4-5 steps: not copied
    assert copier.alpha(1) == pytest.approx(0.25) and copier.alpha(2) == pytest.approx(0.5)
    uni = Match(1, 0, [9], [4, 5])
    lengths = [copier.length(uni, auto, 1.0) for _ in range(8)]
    assert lengths == [0] * 7 + [1]                        # a unigram at alpha 1/4 (1.25 tokens for 1.3 steps): probed
    copier.observe(uni, 1, 0, 0.013, auto)                 # ... the probe fails: the next waits twice as long
    assert [copier.length(uni, auto, 1.0) for _ in range(16)] == [0] * 15 + [1]
    copier.observe(uni, 1, 1, 0.013, auto)                 # a probe that pays: back to the short wait
    assert copier.wait[1] == copier.probe


# ---- in the decoding loop ----------------------------------------------------------------
# a prompt that repeats itself, so n-grams of the context match and copies are tried
PROMPT = [1, 5, 17, 3, 44, 60, 8, 5, 17, 3, 44, 9, 12, 5, 17]


def run(lm, strategy, **kw):
    cfg = GenConfig(**{"max_new_tokens": 40, "det": 0.0, "strategy": strategy, **kw})
    return list(generate(lm, None, cfg, "clasp", prompt_ids=PROMPT))


def hf_greedy(lm, n):
    out = lm.model.generate(torch.tensor([PROMPT]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                            pad_token_id=0)
    return out[0, len(PROMPT):].tolist()


@pytest.mark.parametrize("strategy,kw", [
    ("lookup", dict(draft_len=4)), ("lookup", dict(draft_len=10)),
    ("clasp+lookup", dict(num_skip=2, draft_len=4, loi=1)), ("clasp+lookup", dict(num_skip=3, draft_len=8, loi=3)),
    ("clasp+lookup", dict(num_skip=3, draft_len=6, auto=True)),
])
def test_greedy_lookup_sources_are_token_identical_to_transformers_generate(tiny, strategy, kw):
    tiny.model.generation_config.eos_token_id = None
    events = run(tiny, strategy, **kw)
    done = events[-1]
    assert done.new_tokens == 40 and done.output_ids == hf_greedy(tiny, 40)
    rounds = [e for e in events if isinstance(e, Round)]
    copied = [r for r in rounds if r.lookup]
    assert copied and (kw.get("auto") or sum(r.accepted for r in copied) > 0)   # copies made, some accepted
    context = PROMPT + done.output_ids
    for r in copied:                                          # each copy is what the context held there
        src = r.lookup
        at = src["copied_from"]
        assert r.skip == [] and r.draft_probs == [1.0] * len(r.drafted)
        assert context[at:at + len(r.drafted)] == r.drafted and src["length"] == len(r.drafted)
        assert context[src["start"]:src["start"] + src["n"]] == src["ngram"]
        before = len(PROMPT) + r.start - 1                     # the context's end when the round began
        assert context[before - src["n"] + 1:before + 1] == src["ngram"] and src["start"] < before
    if strategy == "lookup":
        assert not [e for e in events if isinstance(e, LayerChoice)]
        assert all(r.skip == [] for r in rounds)
    elif not kw.get("auto"):
        assert any(r.skip for r in rounds)                    # the layer draft runs where nothing matched
    again = trace.loads(trace.dumps(events))
    assert [trace.to_dict(e) for e in again] == [trace.to_dict(e) for e in events]


def test_old_traces_without_a_source_still_load():
    d = trace.to_dict(Round(index=0, skip=[1], drafted=[3], drafted_text=["a"], draft_probs=[0.9],
                            target_probs=[0.8], accepted=1, next_token=4, next_text="b", next_kind="bonus",
                            emitted=[3, 4], draft_s=0.0, verify_s=0.0, start=1))
    del d["lookup"]
    assert trace.event_from_dict(d).lookup is None


def test_lookup_without_layers_refuses_auto(tiny):
    with pytest.raises(ValueError, match="auto .*not 'lookup'"):
        generate(tiny, None, GenConfig(strategy="lookup", auto=True), prompt_ids=PROMPT)


def test_sampled_lookup_run_end_to_end(tiny):
    tiny.model.generation_config.eos_token_id = None
    a = run(tiny, "clasp+lookup", num_skip=2, temperature=0.8, seed=3)
    assert a[-1].output_ids == run(tiny, "clasp+lookup", num_skip=2, temperature=0.8, seed=3)[-1].output_ids
    assert any(e.lookup for e in a if isinstance(e, Round))


class TestSampledLookupRunsAreExact:
    """test_decoding's exact joint law of the first three new tokens (4-token vocabulary), against seeded
    ``lookup`` runs: the prompt repeats itself, so most rounds copy, and copies are often rejected."""

    V, T, P = 4, 1.0, [1, 3, 0, 1, 3, 0, 1, 3]
    exact_joint = exact.TestSampledRunsAreExact.exact_joint
    chi_square = staticmethod(exact.TestSampledRunsAreExact.chi_square)

    @pytest.fixture(scope="class")
    def lm(self):
        model = tiny_llama(layers=6, seed=1, vocab=self.V)
        model.generation_config.eos_token_id = None
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield from_modules(model, name="tiny-4")
        torch.set_num_threads(threads)

    def sample_runs(self, lm, n):
        counts, rejected, copied = {}, 0, 0
        for seed in range(n):
            cfg = GenConfig(draft_len=3, temperature=self.T, seed=seed, max_new_tokens=4, strategy="lookup")
            events = list(generate(lm, None, cfg, "clasp", prompt_ids=self.P))
            key = tuple(events[-1].output_ids[:3])
            counts[key] = counts.get(key, 0) + 1
            rounds = [e for e in events if isinstance(e, Round)]
            rejected += sum(len(r.drafted) - r.accepted for r in rounds)
            copied += bool(rounds[0].lookup) and len(rounds[0].drafted) >= 2
        return counts, rejected, copied

    def test_matches_the_exact_distribution(self, lm):
        n = 400
        counts, rejected, copied = self.sample_runs(lm, n)
        assert copied > n / 2 and rejected > n / 4          # multi-token copies, really rejected
        stat, crit = self.chi_square(self.exact_joint(lm.model), counts, n)
        assert stat < crit

    def test_a_wrong_q_is_caught(self, lm, monkeypatch):
        """Positive control: a copy treated as a draw from a uniform q instead of the one-hot q of a
        certain draft (accepted with probability min(1, p(x) / q(x)), too often)."""
        real = decoding.copy_draft

        def soft_q(*a):
            d = real(*a)
            d.q_rows = [torch.full_like(q, 1.0 / q.numel()) for q in d.q_rows]
            return d

        monkeypatch.setattr(decoding, "copy_draft", soft_q)
        n = 300
        counts, rejected, _ = self.sample_runs(lm, n)
        stat, crit = self.chi_square(self.exact_joint(lm.model), counts, n)
        assert stat > crit


# ---- the embedded model -----------------------------------------------------------------
EMBEDDED_PROMPTS = [q for q in bench_prompts(per_task=1) if q["category"] in ("rag", "translation")]


@pytest.fixture(scope="module")
def embedded_refs(embedded):
    from tests.test_integration import hf_generate

    refs = {}
    for q in EMBEDDED_PROMPTS:
        ids, _ = encode_prompt(embedded, q["turns"][0])
        refs[q["category"]] = (ids, hf_generate(embedded, ids, 48))
    return refs


@pytest.mark.integration
@pytest.mark.parametrize("task", ["rag", "translation"])
@pytest.mark.parametrize("strategy,auto", [("lookup", False), ("clasp+lookup", False), ("clasp+lookup", True)])
def test_embedded_lookup_sources_token_identical(embedded, embedded_refs, task, strategy, auto):
    ids, ref = embedded_refs[task]
    cfg = GenConfig(max_new_tokens=48, strategy=strategy, auto=auto)
    events = list(generate(embedded, None, cfg, "clasp", prompt_ids=ids))
    assert events[-1].output_ids == ref
    if task == "rag" and not auto:
        assert sum(r.accepted for r in events if isinstance(r, Round) and r.lookup) > 0   # copies paid off


@pytest.mark.integration
def test_recorded_lookup_trace_is_what_the_engine_makes(embedded):
    """assets/lookup-trace.jsonl (replayed by the browser test) holds this engine's own ``lookup`` and vanilla
    runs of LOOKUP_PROMPT: same tokens and copies now, and an accepted copy for the screenshot to hover."""
    runs = {evs[0].method: evs for evs in trace.split_runs(trace.read_trace(LOOKUP_TRACE))}
    for method in ("clasp", "vanilla"):
        fresh = list(generate(embedded, LOOKUP_PROMPT, LOOKUP_CFG, method))
        assert fresh[-1].output_ids == runs[method][-1].output_ids
        copies = [[(r.drafted, r.accepted, r.lookup["copied_from"]) for r in evs if isinstance(r, Round) and r.lookup]
                  for evs in (fresh, runs[method])]
        assert copies[0] == copies[1]
        if method == "clasp":
            assert any(accepted for _, accepted, _ in copies[0])


# ---- the page: a copied round in the token view, the layer map, Teach and the cost model ----------
def copied_run():
    """A hand-made run: round 1 drafts with skipped layers, round 2 copies "dog" "." from the prompt."""
    from clasp_core.trace import Prefill
    src = dict(n=2, ngram=[7, 8], start=3, copied_from=5, length=2, in_prompt=True, prompt_len=9,
               before="the quick", ngram_text=" brown fox", copied_text=" jumps over", after=" the dog")
    pre = Prefill(method="clasp", model="m", num_layers=4, prompt_ids=list(range(9)), prompt_text="p",
                  config=GenConfig(), seconds=0.1, first_token=7, first_text=" brown")
    r1 = Round(index=0, skip=[1, 2], drafted=[8], drafted_text=[" fox"], draft_probs=[0.9], target_probs=[0.8],
               accepted=1, next_token=5, next_text=" jumps", next_kind="bonus", emitted=[8, 5], draft_s=0.02,
               verify_s=0.05, start=1, k_max=8)
    r2 = Round(index=1, skip=[], drafted=[6, 9], drafted_text=[" over", " a"], draft_probs=[1.0, 1.0],
               target_probs=[0.7, 0.1], accepted=1, next_token=4, next_text=" the", next_kind="corrected",
               emitted=[6, 4], draft_s=0.0001, verify_s=0.06, start=3, k_max=2, lookup=src)
    return [pre, r1, r2]


def test_page_marks_a_copied_round():
    from ui.views.layer_map import COPIED_ROUND, skip_matrix
    from ui.views.state import build_view
    from ui.views.teaching import explain_round
    from ui.views.tokens import token_html

    view = build_view(copied_run())
    html = token_html(view)
    assert html.count("tok-copied") == 2 and html.count('<span class="tok ') == len(view.tokens())
    assert 'data-copied-from="5"' in html and 'data-copied-from="6"' in html
    assert '<mark class="copy-span"> jumps over</mark>' in html and "copied by prompt lookup from the prompt" in html
    z = skip_matrix(view)
    assert [row[0] for row in z] == [0, 1, 1, 0] and all(row[1] == COPIED_ROUND for row in z)
    text = explain_round(view, 1)
    assert "copied from the context" in text and "“ brown fox”" in text and "No draft model ran" in text
    assert "layers skipped" in explain_round(view, 0)


def test_cost_model_counts_a_copy_as_free():
    from clasp_core.costs import draft_steps, run_costs

    _, r1, r2 = copied_run()
    assert draft_steps(r2) == 0 and draft_steps(r1) == 2          # r1: one draft, one step below DET
    c = run_costs([r1, r2], [], step_s=0.05)
    assert c.k == 1.0                                 # two draft steps over two drafting rounds
    assert c.r_draft == pytest.approx(0.02 / 2 / 0.05)    # the copy's search time is not a draft step
    assert c.r_verify == pytest.approx((0.05 + 0.06) / 2 / 0.05) and c.tau == 2.0

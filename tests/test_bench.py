"""The bench CLI, the sweep and the shape study: their tables and files."""
import json

import pytest

from clasp_core.bench import methods, run, shapes, specbench, sweep
from clasp_core.bench.stats import pooled, task_of
from clasp_core.decoding import GenConfig
from tests.conftest import BENCH


def row(qid, method, toks, wall, **kw):
    return dict(question_id=qid, category="writing", task="mt_bench", method=method, new_tokens=len(toks),
                wall_s=wall, tokens_per_s=len(toks) / wall, token_ids=toks, text="", **kw)


def test_summary_counts_lossless_speedups_and_acceptance():
    rows = [row(1, "hf", [1, 2, 3, 4], 2.0), row(1, "vanilla", [1, 2, 3, 4], 1.0),
            row(1, "clasp", [1, 2, 3, 5], 0.5, rounds=3, dp_s=0.1, drafted=4, accepted=2, tau=1.0),
            row(2, "hf", [7, 8], 1.0), row(2, "vanilla", [7, 8], 1.0),
            row(2, "clasp", [7, 8], 1.0, rounds=1, dp_s=0.0, drafted=1, accepted=1, tau=1.0)]
    text = run.summarize(rows, temperature=0.0)
    assert "lossless: identical 3/4 · ties 0 · errors 1" in text      # no top two recorded: no tie to show
    cells = [c.strip() for c in [ln for ln in text.splitlines() if ln.startswith("| overall | clasp ")][0].split("|")]
    # clasp: 6 tokens in 1.5 s = 4 tok/s; vanilla 6 in 2 s = 3; hf 6 in 3 s = 2
    # tau = (3 + 1) tokens after the prefill's / (3 + 1) rounds; accepted 3 of 5 drafted; DP 0.1 of 1.5 s
    assert cells[3:11] == ["2", "4.00", "1.33x", "2.00x", "1.00", "60%", "6.7%", "identical 1/2 · ties 0 · errors 1"]
    assert task_of("roleplay") == "mt_bench" and task_of("rag") == "rag"


def test_summary_tells_a_rounding_tie_from_an_error():
    top = lambda best, second, l1, l2: dict(top_ids=[[best, second]], top_logits=[[l1, l2]])
    hf, van = row(1, "hf", [5], 1.0), row(1, "vanilla", [5], 1.0, dtype="bfloat16", **top(5, 6, 20.0, 19.875))
    tie = row(1, "clasp", [6], 1.0, rounds=1, dp_s=0.0, drafted=1, accepted=0, dtype="bfloat16",
              **top(6, 5, 20.0, 19.875))
    err = row(1, "auto", [7], 1.0, rounds=1, dp_s=0.0, drafted=1, accepted=1, dtype="bfloat16",
              **top(5, 7, 20.0, 12.0))
    text = run.summarize([hf, van, tie, err], temperature=0.0)
    assert "lossless: identical 1/3 · ties 1 · errors 1" in text
    assert "tie: question 1 clasp at token #0 (6 vs 5): margin 0.125 (vanilla 0.125), tolerance 0.5 in bfloat16" in text
    assert "error: question 1 auto" in text and "did not rank first" in text


def test_pooled_leaves_non_drafting_methods_without_tau():
    s = pooled([row(1, "vanilla", [1, 2], 1.0)])
    assert s.tau is None and s.accept is None and s.tokens_per_s == 2.0


def test_bench_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit, match="unknown method"):
        run.main(["--prompts", str(BENCH), "--methods", "hf,medusa"])
    with pytest.raises(SystemExit, match="not found"):
        run.main(["--prompts", str(tmp_path / "none.jsonl")])
    with pytest.raises(SystemExit):           # --num-skip and --num-skip-frac exclude each other
        run.main(["--prompts", str(BENCH), "--num-skip", "3", "--num-skip-frac", "0.2"])


def test_every_engine_method_maps_to_one_loop_and_strategy():
    assert methods.METHODS == ("hf", "vanilla", "clasp", "auto", "clasp-once", "clasp-fused", "static", "early-exit",
                               "random", "lookup", "clasp+lookup", "hf-lookup")
    for s in ("clasp", "clasp-once", "clasp-fused", "static", "early-exit", "random", "lookup"):   # each, as itself
        assert methods.engine_config(GenConfig(), s) == ("clasp", GenConfig(strategy=s))
    assert methods.engine_config(GenConfig(), "clasp+lookup")[1].auto       # auto: plain steps where nothing pays
    kind, cfg = methods.engine_config(GenConfig(), "auto")
    assert kind == "clasp" and cfg.auto
    kind, cfg = methods.engine_config(GenConfig(auto=True), "vanilla")
    assert kind == "vanilla" and not cfg.auto
    assert methods.engine_config(GenConfig(), "early-exit")[1].strategy == "early-exit"
    assert methods.engine_config(GenConfig(), "vanilla")[1].strategy == "clasp"     # the field's default
    with pytest.raises(ValueError, match="unknown method"):
        methods.check(["medusa"])


def test_specbench_answer_has_eval_py_fields_and_shapes(tmp_path):
    rows = [dict(row(81, "clasp", [5, 6, 7, 8, 9], 0.5, rounds=2, drafted=4, accepted=2, dp_s=0.0),
                 text="Hello there", accept_lengths=[3, 1]),
            dict(row(81, "hf", [5, 6, 7, 8, 9], 1.0), text="Hello there", accept_lengths=[1] * 5)]
    paths = specbench.write_answers(rows, tmp_path / "answers", specbench.model_id("HuggingFaceTB/SmolLM2-135M"))
    assert [p.name for p in paths] == ["HuggingFaceTB--SmolLM2-135M-clasp.jsonl",
                                       "HuggingFaceTB--SmolLM2-135M-hf.jsonl"]
    ans = [json.loads(line) for line in paths[0].read_text().splitlines()]
    assert len(ans) == 1
    a = ans[0]
    assert set(a) == {"question_id", "category", "answer_id", "model_id", "choices", "tstamp"}
    assert (a["question_id"], a["category"], a["model_id"]) == (81, "writing", "HuggingFaceTB--SmolLM2-135M")
    assert isinstance(a["answer_id"], str) and isinstance(a["tstamp"], float)
    (c,) = a["choices"]
    assert set(c) == {"index", "turns", "decoding_steps", "new_tokens", "wall_time", "accept_lengths"}
    # per-turn lists (one turn), one flat list of tokens per decoding step
    assert c == dict(index=0, turns=["Hello there"], decoding_steps=[2], new_tokens=[5], wall_time=[0.5],
                     accept_lengths=[3, 1])
    assert json.loads(paths[1].read_text())["choices"][0]["accept_lengths"] == [1] * 5
    assert specbench.model_id("SmolLM2-135M-Instruct (embedded, GGUF Q4_1 → dequantised)") == "SmolLM2-135M-Instruct"


def test_shape_study_on_a_tiny_shape(tmp_path, capsys):
    out = tmp_path / "shapes.json"
    shapes.main(["--shapes", "tiny", "--device", "cpu", "--reps", "2", "--context", "16", "--out", str(out)])
    res = json.loads(out.read_text())[0]
    assert res["layers"] == 8 and res["full_ms"] > 0 and res["verify_ms"] > 0 and res["dp_ms"] > 0
    assert res["dp_eager_ms"] > 0 and res["fused_verify_ms"] > 0 and res["dp_fixed_shape"] is False   # a CPU
    assert set(res["draft_rel"]) == {"0.25", "0.45", "0.5", "0.6"}
    assert "PROJECTION" in res["projection"]["note"] and len(res["projection"]["speedup_loi1"]) == 2
    assert "not measured" in capsys.readouterr().out


def test_sweep_grid_moves_one_parameter_at_a_time():
    base = GenConfig()
    pts = sweep.grid(30, base)
    assert {p for _, p, _, _ in pts} == {"M", "K", "DET", "LOI"} and {m for m, *_ in pts} == {"clasp"}
    for _, p, _v, cfg in pts:
        changed = {k for k in base.__dict__ if getattr(cfg, k) != getattr(base, k)}
        assert changed <= {sweep.PARAMS[p]}


def test_strategy_grid_turns_fractions_into_M():
    pts = sweep.strategy_grid(30, GenConfig(), ["clasp", "early-exit"], [0.15, 0.45])
    assert [(m, v, cfg.num_skip) for m, _, v, cfg in pts] == \
        [("clasp", 0.15, 4), ("clasp", 0.45, 14), ("early-exit", 0.15, 4), ("early-exit", 0.45, 14)]
    with pytest.raises(SystemExit, match="fractions"):
        sweep.main(["--prompts", str(BENCH), "--strategies", "clasp", "--m-fracs", "0.2,1.5"])


def strategy_sweep_rows():
    rows = [dict(row(1, "vanilla", [1, 2, 3, 4, 5], 2.0), param="vanilla", value=None, same_as_vanilla=True)]
    for m, frac, rounds in [("clasp", 0.25, 2), ("clasp", 0.45, 4), ("random", 0.25, 5)]:
        rows.append(dict(row(1, m, [1, 2, 3, 4, 5], 1.0, rounds=rounds, drafted=4, accepted=1,
                             dp_s=0.0, M=round(frac * 30)), param="M/L", value=frac, same_as_vanilla=True))
    return rows


def test_strategy_sweep_table():
    lines = sweep.summarize(strategy_sweep_rows()).splitlines()
    cells = [[c.strip() for c in ln.split("|")[1:-1]] for ln in lines[2:5]]
    assert [c[:6] for c in cells] == [["clasp", "M/L", "0.25", "8", "2.00", "25%"],
                                      ["clasp", "M/L", "0.45", "14", "1.00", "25%"],
                                      ["random", "M/L", "0.25", "8", "0.80", "25%"]]
    assert all(c[7] == "2.00x" and c[9] == "1/1" for c in cells) and "vanilla: 2.50 tokens/s" in lines[-1]


def test_strategy_figure_reads_the_sweep_rows():
    from ui.bench.figures import strategy_tau_figure

    fig = strategy_tau_figure(strategy_sweep_rows())
    lines = {t.name: (list(t.x), list(t.y)) for t in fig.data}
    assert lines == {"clasp": ([0.25, 0.45], [2.0, 1.0]), "random": ([0.25], [0.8])}


@pytest.mark.integration
def test_bench_end_to_end_on_the_embedded_model(tmp_path, capsys):
    out, answers = tmp_path / "r.jsonl", tmp_path / "answers"
    run.main(["--prompts", str(BENCH), "--limit", "1", "--max-new-tokens", "12", "--device", "cpu",
              "--dtype", "float32", "--methods", "hf,vanilla,clasp,auto", "--out", str(out), "--no-warmup",
              "--num-skip-frac", "0.25", "--answer-dir", str(answers)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["method"] for r in rows] == ["hf", "vanilla", "clasp", "auto"]
    assert all(r["token_ids"] == rows[0]["token_ids"] for r in rows)
    assert {"rounds", "drafted", "accepted", "tau", "dp_s"} <= set(rows[2]) and rows[2]["M"] == 8   # round(.25*30)
    assert all(r["lossless"]["kind"] == "identical" and len(r["top_ids"]) == r["new_tokens"] for r in rows[1:])
    assert all(sum(r["accept_lengths"]) == r["new_tokens"] - (r["method"] != "hf") for r in rows)
    assert "lossless: identical 3/3 · ties 0 · errors 0" in capsys.readouterr().out
    assert sorted(p.name.rsplit("-", 1)[-1] for p in answers.iterdir()) == \
        ["auto.jsonl", "clasp.jsonl", "hf.jsonl", "vanilla.jsonl"]


@pytest.mark.integration
def test_every_strategy_is_lossless_on_the_embedded_model(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    run.main(["--prompts", str(BENCH), "--limit", "1", "--max-new-tokens", "16", "--device", "cpu",
              "--dtype", "float32", "--methods", "hf,clasp,clasp-once,static,early-exit,random", "--out", str(out),
              "--no-warmup"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["token_ids"] == rows[0]["token_ids"] for r in rows)
    assert sum(r["drafted"] for r in rows[1:]) > 0
    assert "lossless: identical 5/5 · ties 0 · errors 0" in capsys.readouterr().out

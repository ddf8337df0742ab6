"""The bench CLI, the sweep and the shape study: their tables and files."""
import json

import pytest

from clasp_core import bench, shape_study, sweep
from tests.conftest import BENCH


def row(qid, method, toks, wall, **kw):
    return dict(question_id=qid, category="writing", method=method, new_tokens=len(toks), wall_s=wall,
                tokens_per_s=len(toks) / wall, token_ids=toks, text="", **kw)


def test_summary_counts_lossless_and_speedups():
    rows = [row(1, "hf", [1, 2, 3, 4], 2.0), row(1, "vanilla", [1, 2, 3, 4], 1.0),
            row(1, "clasp", [1, 2, 3, 5], 0.5, rounds=3, dp_s=0.1, drafted=4, accepted=2, tau=1.0),
            row(2, "hf", [7, 8], 1.0), row(2, "vanilla", [7, 8], 1.0),
            row(2, "clasp", [7, 8], 1.0, rounds=1, dp_s=0.0, drafted=1, accepted=1, tau=1.0)]
    text = bench.summarize(rows, temperature=0.0)
    assert "lossless: 3/4" in text
    clasp_line = [line for line in text.splitlines() if line.startswith("overall") and " clasp " in line][0]
    # clasp: 6 tokens in 1.5 s = 4 tok/s; vanilla 6 in 2 s = 3; hf 6 in 3 s = 2
    assert "4.00" in clasp_line and "1.33x" in clasp_line and "2.00x" in clasp_line
    assert " 1.00 " in clasp_line                      # tau = (3 + 1) / (3 + 1) rounds
    assert bench.task_of("roleplay") == "mt_bench" and bench.task_of("rag") == "rag"


def test_bench_rejects_unknown_method_and_missing_file(tmp_path):
    with pytest.raises(SystemExit, match="unknown method"):
        bench.main(["--prompts", str(BENCH), "--methods", "hf,medusa"])
    with pytest.raises(SystemExit, match="not found"):
        bench.main(["--prompts", str(tmp_path / "none.jsonl")])


def test_shape_study_on_a_tiny_shape(tmp_path, capsys):
    out = tmp_path / "shapes.json"
    shape_study.main(["--shapes", "tiny", "--device", "cpu", "--reps", "2", "--context", "16", "--out", str(out)])
    res = json.loads(out.read_text())[0]
    assert res["layers"] == 8 and res["full_ms"] > 0 and res["verify_ms"] > 0 and res["dp_ms"] > 0
    assert set(res["draft_rel"]) == {"0.25", "0.45", "0.5", "0.6"}
    assert "PROJECTION" in res["projection"]["note"] and len(res["projection"]["speedup_loi1"]) == 2
    assert "not measured" in capsys.readouterr().out


def test_sweep_grid_moves_one_parameter_at_a_time():
    from clasp_core.decoding import GenConfig
    base = GenConfig()
    pts = sweep.grid(30, base)
    assert {p for p, _, _ in pts} == {"M", "K", "DET", "LOI"}
    for p, v, cfg in pts:
        changed = {k for k in base.__dict__ if getattr(cfg, k) != getattr(base, k)}
        assert changed <= {{"M": "num_skip", "K": "draft_len", "DET": "det", "LOI": "loi"}[p]}


@pytest.mark.integration
def test_bench_end_to_end_on_the_embedded_model(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    bench.main(["--prompts", str(BENCH), "--limit", "1", "--max-new-tokens", "12", "--device", "cpu",
                "--dtype", "float32", "--methods", "hf,vanilla,clasp,auto", "--out", str(out), "--no-warmup"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["method"] for r in rows] == ["hf", "vanilla", "clasp", "auto"]
    assert all(r["token_ids"] == rows[0]["token_ids"] for r in rows)
    assert {"rounds", "drafted", "accepted", "tau", "dp_s"} <= set(rows[2])
    assert "lossless: 3/3" in capsys.readouterr().out

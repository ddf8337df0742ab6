"""shapes --replay-tau: the real CLaSp loop on a random-weight shape with acceptance drawn to mean tau."""
import json

import pytest
import torch

from clasp_core.bench import replay, shapes
from clasp_core.costs import expected_tokens
from clasp_core.runner import Runner
from clasp_core.strategies import make_strategy
from tests.conftest import tiny_llama


@pytest.mark.parametrize("tau", [1.0, 1.3, 3.68, 6.22, 9.0])
def test_drawn_acceptance_has_mean_tau_and_stays_within_k(tau):
    acc = replay.Acceptance(tau, K=8, seed=3)
    draws = [acc.draw() for _ in range(640)]
    assert all(0 <= a <= 8 for a in draws)
    assert abs(sum(a + 1 for a in draws) / len(draws) - tau) < 0.03           # 20 whole stratified blocks
    assert abs(sum(a + 1 for a in draws[:32]) / 32 - tau) < 0.4                # one block: still near tau
    assert expected_tokens(acc.alpha, 8) == pytest.approx(tau, abs=1e-9)
    again = replay.Acceptance(tau, K=8, seed=3)
    assert [again.draw() for _ in range(640)] == draws                         # seeded: every repeat alike


def test_tau_out_of_reach_is_a_clear_error():
    with pytest.raises(ValueError, match="between 1 and K \\+ 1 = 5"):
        replay.alpha_for(5.5, 4)
    with pytest.raises(SystemExit, match="tau must be between 1 and K"):
        shapes.main(["--replay-tau", "paper", "--shapes", "tiny", "--device", "cpu", "-K", "4"])
    with pytest.raises(SystemExit, match="not a layer-choice strategy"):
        shapes.main(["--replay-tau", "3", "--shapes", "tiny", "--device", "cpu", "--methods", "clasp,nope"])
    with pytest.raises(SystemExit, match="comma list of numbers or 'paper'"):
        shapes.main(["--replay-tau", "high", "--shapes", "tiny", "--device", "cpu"])


def test_replayed_decode_rolls_back_to_the_accepted_length_every_round(monkeypatch):
    """Each round's verification writes the newest token and every draft; the rollback keeps the newest
    token and the accepted drafts only, so the cache always ends where the emitted tokens end."""
    runner = Runner(tiny_llama(layers=6), capacity=160)
    _, hs = runner.forward(torch.arange(3, 23), 0, hidden=True, last_only=True)
    seen = []
    rollback = runner.rollback

    def watched(n):
        seen.append((runner.length, n))
        rollback(n)
    monkeypatch.setattr(runner, "rollback", watched)
    acc = replay.Acceptance(2.5, K=4, seed=1)
    t = replay.decode_clasp(runner, make_strategy("clasp"), acc, 7, 20, hs[:, -1], M=2, K=4, loi=1, n=40)
    assert t.tokens == 40 and runner.length == t.end_length == 20 + 40
    assert len(seen) == len(t.rounds) and all(a <= drafted <= steps for steps, drafted, a in t.rounds)
    assert all(n <= before for before, n in seen) and any(n < before for before, n in seen)   # drafts forgotten
    assert len(t.dp_seconds) == len(t.rounds) - 1 and len(t.skips) == len(t.rounds)          # LOI 1
    assert all(len(s) == 2 for s in t.skips)


def test_replay_on_the_tiny_shape_measures_clasp_against_vanilla(tmp_path, capsys):
    out = tmp_path / "replay.json"
    assert shapes.main(["--replay-tau", "3", "--shapes", "tiny", "--device", "cpu", "--dtype", "float32",
                        "--context", "16", "--new-tokens", "96", "--reps", "1", "--loi", "1,4",
                        "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("**Replayed acceptance**") and "| tau replayed | LOI | tok/s | x vanilla |" in printed
    data = json.loads(out.read_text())
    assert data["label"] == "replayed acceptance"
    runs = data["runs"]
    assert list(runs) == ["tiny vanilla", "tiny clasp tau=3 loi=1", "tiny clasp tau=3 loi=4"]
    vanilla = runs["tiny vanilla"]
    assert vanilla["rounds"] == vanilla["new_tokens"] == 96 and vanilla["end_length"] == 16 + 96
    for loi in (1, 4):
        r = runs[f"tiny clasp tau=3 loi={loi}"]
        assert r["label"] == "replayed acceptance" and r["method"] == "clasp" and r["loi"] == loi
        assert r["new_tokens"] == 96 and r["end_length"] == 16 + 96              # the rollbacks kept it right
        assert abs(r["tau_replayed"] - 3) < 0.3 and r["tau_replayed"] == 96 / r["rounds"]
        assert r["dp_calls"] == (r["rounds"] - 1) // loi and r["accepted"] <= r["drafted"]
        assert r["draft_steps"] == r["drafted"]                                  # oracle stop: min(K, a + 1)
        assert 0 < r["dp_share"] < 1 and r["dp_ms"] > 0 and r["dp_steps"] > 0
        assert r["speedup"] == pytest.approx(r["tokens_per_s"] / vanilla["tokens_per_s"])
        assert r["vanilla_tokens_per_s"] == vanilla["tokens_per_s"] and r["alpha"] == replay.alpha_for(3, 8)

"""Algorithm 1: the DP's table, path and skip set on a tiny model, against a brute-force check."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from clasp_core.layer_dp import backtrack, choose_skip_set
from clasp_core.runner import Runner
from tests.conftest import tiny_llama

IDS = [3, 14, 15, 9, 26, 5]


def setup(layers=6, ids=IDS):
    model = tiny_llama(layers=layers)
    runner = Runner(model, capacity=64)
    _, hs = runner.forward(torch.tensor(ids), 0, hidden=True)
    return model, runner, hs[:, -1], len(ids) - 1


def draft_state(runner, skip, ids=IDS):
    """The draft's last state x_L for the last token, by the ordinary forward with ``skip`` (not the
    DP's packed candidates): roll the cache back before that token and run it again, then put the
    full model's K/V back in its slot."""
    p, last = len(ids) - 1, torch.tensor(ids[-1:])
    runner.rollback(p)
    _, hs = runner.forward(last, p, frozenset(skip), hidden=True)
    runner.rollback(p)
    runner.forward(last, p)
    return hs[-1, -1]


@pytest.mark.parametrize("M", [0, 1, 2, 3, 5])
def test_skip_set_has_exactly_m_layers_and_path_runs_corner_to_corner(M):
    _, runner, xs, p = setup()
    res = choose_skip_set(runner, xs, p, M)
    L = runner.num_layers
    assert len(res.skip) == M and len(set(res.skip)) == M
    assert all(0 <= i < L for i in res.skip)
    assert res.path[0] == [L, M] and res.path[-1] == [0, 0]
    assert len(res.path) == L + 1
    # each step down the path drops i by one, and j by one exactly at skipped layers
    for (i, j), (i2, j2) in zip(res.path, res.path[1:]):
        assert i2 == i - 1 and j - j2 == (1 if i - 1 in res.skip else 0)
    assert len(res.D) == L + 1 and all(len(row) == M + 1 for row in res.D)
    assert res.D[L][0] == pytest.approx(1.0, abs=1e-5)
    assert runner.length == p + 1


def test_dp_table_entry_matches_the_backtracked_draft_state():
    _, runner, xs, p = setup()
    L, M = runner.num_layers, 3
    res = choose_skip_set(runner, xs, p, M)
    h = draft_state(runner, res.skip)
    cos = F.cosine_similarity(h, xs[L], dim=0).item()
    assert res.D[L][M] == pytest.approx(cos, abs=1e-4)


def test_dp_is_close_to_exhaustive_search_and_never_beats_it():
    _, runner, xs, p = setup(layers=6)
    L, M = runner.num_layers, 2
    res = choose_skip_set(runner, xs, p, M)
    best = max(F.cosine_similarity(draft_state(runner, s), xs[L], dim=0).item()
               for s in itertools.combinations(range(L), M))
    assert res.D[L][M] <= best + 1e-5
    assert res.D[L][M] >= best - 0.05


def test_dp_rejects_m_out_of_range():
    _, runner, xs, p = setup()
    with pytest.raises(ValueError, match="M must be"):
        choose_skip_set(runner, xs, p, runner.num_layers)


def test_backtrack_all_skipped_diagonal():
    L = M = 3
    skipped = [[False] * (M + 1) for _ in range(L + 1)]
    for i in range(1, L + 1):
        skipped[i][i] = True
    skip, path = backtrack(skipped, L, M)
    assert skip == [0, 1, 2] and path == [[3, 3], [2, 2], [1, 1], [0, 0]]

"""The sweep view in Teach: the shipped sweep's numbers, the fastest value of each knob marked (issue 18 §4)."""
import pytest

from ui.sweep_view import KNOBS, best, read_sweep, sweep_figure, sweep_points


def test_points_are_the_benchs_pooled_numbers_and_the_optimum_is_marked():
    pts = sweep_points(read_sweep())
    assert tuple(pts) == KNOBS
    # assets/bench/cpu-sweep.txt, the bench's own table of the same file: M 3 -> tau 1.42, 0.38x
    v, tau, speed = pts["M"][0]
    assert v == 3 and tau == pytest.approx(1.42, abs=0.005) and speed == pytest.approx(0.38, abs=0.005)
    assert best(pts["LOI"])[0] == 64
    fig = sweep_figure()
    stars = [t for t in fig.data if t.name == "fastest"]
    assert len(stars) == 4 and stars[3].x == ("64",) and stars[3].text[0].startswith("★")


def test_a_missing_sweep_says_so():
    assert "No sweep" in sweep_figure([]).layout.title.text

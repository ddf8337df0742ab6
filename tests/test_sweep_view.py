"""The sweep view in Teach: the shipped sweep's numbers, the fastest value of each knob marked."""
import pytest

from ui.views.sweep_view import KNOBS, SWEEP, best, read_sweep, sweep_figure, sweep_points


def test_points_are_the_benchs_pooled_numbers_and_the_optimum_is_marked():
    pts = sweep_points(read_sweep())
    assert tuple(pts) == KNOBS
    # the bench's own table of the same runs (assets/bench/cpu-sweep.txt): the view pools them the same way
    table = {}
    for line in SWEEP.with_suffix(".txt").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "clasp":                 # method, parameter, value, M, tau, accepted, tok/s, x vanilla, ...
            table[cells[1], float(cells[2])] = (float(cells[4]), float(cells[7].rstrip("x")))
    assert len(table) == sum(len(p) for p in pts.values())
    for knob, points in pts.items():
        for v, tau, speed in points:
            want_tau, want_speed = table[knob, float(v)]
            assert tau == pytest.approx(want_tau, abs=0.005) and speed == pytest.approx(want_speed, abs=0.005)
    assert best(pts["LOI"])[0] == 64
    fig = sweep_figure()
    stars = [t for t in fig.data if t.name == "fastest"]
    assert len(stars) == 4 and stars[3].x == ("64",) and stars[3].text[0].startswith("★")
    # LOI's best is its last value, at the panel's right edge: its label leans inwards and is not clipped
    assert stars[3].textposition == "top left" and stars[3].cliponaxis is False


def test_a_missing_sweep_says_so():
    assert "No sweep" in sweep_figure([]).layout.title.text

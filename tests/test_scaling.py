"""The theory scaling curve L(N) = E + A·N^(−α)."""

from theorycraft.refine._scaling import ScalingCurve, fit_scaling


def test_scaling_curve_recovers_a_planted_power_law():
    truth = ScalingCurve(floor=0.1, scale=2.0, exponent=0.5)
    sizes = [10, 30, 100, 300, 1000, 3000, 10000]
    curve = fit_scaling(sizes, [truth.loss(n) for n in sizes])
    assert abs(curve.floor - 0.1) < 0.005 and abs(curve.exponent - 0.5) < 0.02 and abs(curve.scale - 2.0) < 0.1
    assert abs(curve.size_for(truth.loss(500)) - 500) < 25
    assert curve.size_for(0.05) == float("inf")  # below the floor no size suffices


def test_too_few_points_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="at least 3"):
        fit_scaling([10, 100], [1.0, 0.5])


def test_the_curve_reports_its_errors_and_they_are_calibrated():
    import numpy as np

    truth = ScalingCurve(floor=0.05, scale=3.0, exponent=0.6)
    sizes = np.geomspace(20, 20000, 8)
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(100):  # 3% relative noise: the true α inside ±1.96 standard errors about 95% of the time
        curve = fit_scaling(sizes, [truth.loss(n) * (1 + 0.03 * rng.normal()) for n in sizes])
        assert curve.points == 8 and curve.notes == () and set(curve.errors) == {"floor", "scale", "exponent"}
        covered += abs(curve.exponent - truth.exponent) < 1.96 * curve.errors["exponent"]
    assert 85 <= covered <= 99


def test_too_few_points_and_an_exponent_at_the_grid_edge_are_said():
    three = fit_scaling([100, 400, 1600], [0.5, 0.3, 0.2])
    assert three.errors is None and len(three.notes) == 1
    assert three.notes[0].startswith("rests on 3 distinct sizes (fewer than 5") and "cannot be estimated" in three.notes[0]
    four = fit_scaling([100, 200, 400, 800], [0.5, 0.3, 0.21, 0.16])
    assert four.errors is not None and "rests on 4 distinct sizes" in four.notes[0]
    steep = fit_scaling([100, 200, 400, 800, 1600], [0.5, 0.05, 1e-3, 1e-6, 1e-9])  # faster than any N^-4
    assert steep.exponent > 3.9 and len(steep.notes) == 1 and "sits at the edge of its range" in steep.notes[0]


def test_the_search_records_the_errors_and_the_notes():
    from types import SimpleNamespace

    from theorycraft._commands import _pm
    from theorycraft.refine._trail import scaling_of

    steps = [SimpleNamespace(selection=SimpleNamespace(bits_theory=b, coverage=1 - loss))
             for b, loss in [(100, 0.5), (200, 0.05), (400, 1e-3), (800, 1e-6), (1600, 1e-9)]]
    scaling = scaling_of(steps, 0.99)
    assert scaling["points"] == 5 and "edge of its range" in scaling["notes"][0]
    assert _pm(scaling["errors"], "exponent").startswith(" ± ") and _pm({}, "exponent") == ""


def test_near_coincident_or_narrow_points_are_no_result_and_the_cli_says_why(capsys, monkeypatch):
    """Three points, two nearly coincident: the curve is fitted, but it is not a result, and the
    search's summary says why instead of printing the size it would need."""
    from types import SimpleNamespace

    import theorycraft.api
    from theorycraft.cli import main
    from theorycraft.refine._trail import scaling_of
    from theorycraft.scoring import Scorecard, SizeScore

    near = fit_scaling([1000, 1010, 1020, 1030, 1200], [0.2, 0.19, 0.18, 0.17, 0.1])
    assert any("rests on 2 distinct sizes" in n for n in near.notes) and any("span only 1.20x" in n for n in near.notes)
    totals = [SimpleNamespace(selection=SimpleNamespace(bits_theory=b, coverage=1 - loss))
              for b, loss in [(50_000, 0.05), (50_500, 0.048), (90_000, 0.03)]]
    scaling = scaling_of(totals, 0.99)
    assert scaling["notes"]
    code = SimpleNamespace(coverage=1.0, coverage_free=None, bits_theory=1, bits_total=1)
    step = SimpleNamespace(selection=code, report=code, params=1, theory="")  # theory: the step's YAML text
    card = Scorecard("t", "builtin:x", ("a",), (), {}, 1.0, 1.0, 1.0, 1.0, SizeScore(1))
    found = SimpleNamespace(final=step, trail=[step, step], stopped="done", out="o", scorecard=card, scaling=scaling,
                            reference=None, heads_left_to_mean=[])
    monkeypatch.setattr(theorycraft.api, "search", lambda *a, **k: found)
    assert main(["search", "examples/search_superposition.yaml"]) == 0
    printed = capsys.readouterr().out
    assert "scaling curve: no result" in printed and "distinct sizes" in printed and "needs" not in printed

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
    three = fit_scaling([100, 200, 400], [0.5, 0.3, 0.2])
    assert three.errors is None and three.notes == ("rests on 3 points (fewer than 5): its errors cannot be estimated",)
    four = fit_scaling([100, 200, 400, 800], [0.5, 0.3, 0.21, 0.16])
    assert four.errors is not None and "rests on 4 points" in four.notes[0]
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

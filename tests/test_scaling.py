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

"""When a run counts as converged: the best of its late validations no better than the
best before them (by the tolerance), or an early stop."""

import math

import pytest

from kdcore.convergence import convergence


def history(values, every=10):
    return [{"step": every * (i + 1), "val_dice": v} for i, v in enumerate(values)]


def test_a_run_still_rising_in_its_second_half_is_unconverged():
    rising = convergence(history([0.1 * i for i in range(10)]), 100, False)
    # the last 20% of 100 steps: validations at 80, 90, 100; slope 0.01 per step
    assert rising.slope == pytest.approx(1000.0) and rising.steps == 100
    # best after step 50: 0.9; before: 0.4
    assert rising.late_gain == pytest.approx(50.0) and not rising.converged


def test_a_flat_or_falling_second_half_is_converged():
    flat = convergence(history([0.5, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]), 30, False)
    assert flat.converged and flat.late_gain == pytest.approx(0.0, abs=1e-9)
    falling = convergence(history([0.5, 0.9] + [0.89 - 0.01 * i for i in range(8)]), 20, False)
    assert falling.converged and falling.late_gain < 0


def test_a_cosine_tail_does_not_hide_a_rising_run():
    # rises until step 80, then flat as the learning rate reaches zero: the last 20% is
    # flat, but the second half gained 3 points
    values = [0.70, 0.74, 0.77, 0.79, 0.80, 0.81, 0.82, 0.83, 0.83, 0.83]
    run = convergence(history(values), 100, False)
    assert abs(run.slope) < 1e-9 and run.late_gain == pytest.approx(3.0)
    assert not run.converged
    assert convergence(history(values), 100, False, tolerance=5).converged


def test_an_early_stop_is_converged_and_one_validation_says_nothing():
    assert convergence(history([0.1, 0.2, 0.3]), 30, True).converged
    one = convergence(history([0.5]), 10, False)
    assert math.isnan(one.slope) and math.isnan(one.late_gain) and not one.converged

"""When a run counts as converged: a flat or falling end, or an early stop."""

import math

import pytest

from kdcore.convergence import convergence


def history(values, every=10):
    return [{"step": every * (i + 1), "val_dice": v} for i, v in enumerate(values)]


def test_a_rising_end_is_unconverged_and_a_flat_or_falling_one_converged():
    rising = convergence(history([0.1 * i for i in range(10)]), 100, False)
    # the last 20% of 100 steps: validations at 80, 90, 100; slope 0.01 per step
    assert rising.slope == pytest.approx(1000.0) and rising.end_gain == pytest.approx(20.0)
    assert not rising.converged and rising.steps == 100
    flat = convergence(history([0.5, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]), 30, False)
    assert flat.converged and flat.end_gain == pytest.approx(0.0, abs=1e-9)
    falling = convergence(history([0.9 - 0.01 * i for i in range(10)]), 10, False)
    assert falling.converged and falling.end_gain < 0


def test_the_tolerance_and_window_set_the_line():
    values = [0.0] * 7 + [0.80, 0.805, 0.81]  # +1 point over the last 20 steps
    assert convergence(history(values), 100, False, tolerance=1.5).converged
    assert not convergence(history(values), 100, False, tolerance=0.5).converged
    # half the run: the jump at step 80 is inside the window
    assert not convergence(history(values), 100, False, window=0.5, tolerance=5).converged


def test_an_early_stop_is_converged_and_one_validation_says_nothing():
    assert convergence(history([0.1, 0.2, 0.3]), 30, True).converged
    one = convergence(history([0.5]), 10, False)
    assert math.isnan(one.slope) and not one.converged

"""Whether a training run had converged when it ended, from its validation curve.

A run has converged when early stopping ended it, or when the best validation Dice of
the last ``window`` (a fraction) of the steps it ran beat the best before that stretch by
less than ``tolerance`` Dice points: more steps were no longer buying validation Dice.
Comparing bests, not the last values, keeps one noisy validation from deciding; and
comparing the last half with the first, not only the last few validations, sees through
a cosine schedule, whose learning rate goes to zero at the end and flattens any curve
there (a run stopped that way is still rising over its second half). The slope of
validation Dice over the last 20% of the steps is reported beside it. Plain Python and
numpy (no torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

SLOPE_WINDOW = 0.2  # the share of the steps at the end that ``Convergence.slope`` fits


@dataclass(frozen=True)
class Convergence:
    """How a run ended: steps run, best step, end slope, late gain and the verdict."""

    steps: int  # optimiser steps run
    best_step: int  # the step of the chosen checkpoint
    slope: float  # validation Dice points per 1,000 steps over the last 20% of the steps
    late_gain: float  # points: best validation Dice of the last window - best before it
    converged: bool


def convergence(
    history: Sequence[Mapping[str, float]],
    best_step: int,
    stopped_early: bool,
    window: float = 0.5,
    tolerance: float = 1.0,
) -> Convergence:
    """The convergence of a run from its history (``fit``'s entries: ``step``,
    ``val_dice``); see the module docstring. With validations on one side of the window
    only, the late gain is NaN and the run counts as unconverged unless it stopped early."""
    steps = np.array([h["step"] for h in history], dtype=float)
    dice = np.array([h["val_dice"] for h in history], dtype=float)
    last = float(steps[-1])
    tail = steps >= last - SLOPE_WINDOW * last
    if tail.sum() < 2:  # too few validations at the end: the last two
        tail = np.arange(len(steps)) >= len(steps) - 2
    slope = float(np.polyfit(steps[tail], dice[tail], 1)[0]) if tail.sum() >= 2 else np.nan
    late = steps > last - window * last
    gain = 100 * (dice[late].max() - dice[~late].max()) if late.any() and (~late).any() else np.nan
    converged = bool(stopped_early or gain < tolerance)
    return Convergence(int(last), best_step, 100_000 * slope, float(gain), converged)

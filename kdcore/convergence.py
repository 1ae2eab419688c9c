"""Whether a training run had converged when it ended, from its validation curve.

A run has converged when early stopping ended it, or when its validation Dice rose by
less than ``tolerance`` Dice points over the last ``window`` (a fraction) of the steps it
ran: the least-squares slope of validation Dice over the validations in that stretch,
times its length. A flat or falling end counts as converged (the checkpoint is chosen on
validation, so more steps would not raise it); a rising end does not. Under a cosine
schedule the learning rate is small at the end, which flattens any curve: the budget
axis (``ablation=budget``) says whether more steps would have helped. Plain Python and
numpy (no torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Convergence:
    """How a run ended: steps run, best step, end slope and the verdict."""

    steps: int  # optimiser steps run
    best_step: int  # the step of the chosen checkpoint
    slope: float  # validation Dice points per 1,000 steps over the last window
    end_gain: float  # Dice points gained over the last window (slope x its length)
    converged: bool


def convergence(
    history: Sequence[Mapping[str, float]],
    best_step: int,
    stopped_early: bool,
    window: float = 0.2,
    tolerance: float = 1.0,
) -> Convergence:
    """The convergence of a run from its history (``fit``'s entries: ``step``,
    ``val_dice``); see the module docstring. With one validation the slope is NaN and the
    run counts as unconverged unless it stopped early."""
    steps = np.array([h["step"] for h in history], dtype=float)
    dice = np.array([h["val_dice"] for h in history], dtype=float)
    last = float(steps[-1])
    span = window * last
    tail = steps >= last - span
    if tail.sum() < 2:  # too few validations in the window: the last two
        tail = np.zeros_like(tail)
        tail[-2:] = True
    if tail.sum() < 2:
        return Convergence(int(last), best_step, float("nan"), float("nan"), stopped_early)
    slope = float(np.polyfit(steps[tail], dice[tail], 1)[0])  # Dice per step
    gain = 100 * slope * span
    return Convergence(
        int(last), best_step, 100_000 * slope, gain, bool(stopped_early or gain < tolerance)
    )

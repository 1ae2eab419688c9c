"""The trial schema: the columns of a trial's row, its metrics and their range, how a
grid cell is written, and the file name of a trial's per-epoch history. Plain Python (no
pandas, no torch)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

BASELINE = "baseline"  # the variant without KD terms, which every KD row is compared with

# Test metrics of a trial, each a fraction in METRIC_RANGE.
METRICS = ("dice", "iou", "recall", "precision", "dice_3d")
METRIC_RANGE = (0.0, 1.0)
# One row per trial, in this column order (``kdcore.trial.run_trial`` makes them).
TRIAL_COLUMNS = (
    "variant",
    "seed",
    "teacher",
    "student",
    "params",
    "data_fraction",
    "split",
    *METRICS,
    "tp",
    "fp",
    "fn",
    "val_dice",
    "best_epoch",  # passes over the student's slices at the chosen checkpoint
    "best_step",  # the optimiser step of the chosen checkpoint
    "steps",  # optimiser steps run (the budget, or fewer after an early stop)
    "stopped_early",
    "val_slope",  # validation Dice points per 1,000 steps over the last 20% of steps
    "late_gain",  # best validation Dice of the last half minus the best before (points)
    "converged",  # kdcore.convergence
    "objective",
    "wall_s",  # the trial's own time: data_s + models + fit_s + test
    "data_s",
    "fit_s",  # training and validation epochs (each epoch's split: history/)
    "checkpoint_s",  # saving and reporting resumable checkpoints
    "trial_s",  # the trial's time as Ray Tune measured it
    "node",  # the Ray node it ran on (its id's first 8 characters)
    "machine",  # kdcore.provenance.machine_text of that node
    "trained",  # when the trial finished (UTC) ...
    "commit",  # ... at which commit
    "reused",  # true: taken from the trial store, trained before this table's grid
)


def cell_text(cell: Mapping[str, Any]) -> str:
    """A grid cell as its axis values, e.g. 'teacher=T1, student.width=16' ('' for none)."""
    return ", ".join(f"{k}={v}" for k, v in cell.items())


def history_name(row: dict[str, Any], axes: list[str] = ()) -> str:
    """File name of a trial's history: its axis values, variant and seed, e.g.
    'data_fraction=0.25_bottleneck+pmd-seed0.csv'."""
    cell = "".join(f"{k}={row[k]}_" for k in axes)
    return f"{cell}{row['variant']}-seed{row['seed']}.csv".replace(os.sep, "_")


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters written as escapes ('\\n'), so
    that it stays in one cell of a Markdown table."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)

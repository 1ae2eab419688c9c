"""Per-class results of a multi-class grid, from the per-patient counts of each class.

A trial of several classes writes one ``cases`` entry per test patient and class (TP,
FP, FN). Each class's pooled scores follow from them (its counts summed over patients,
``kdcore.metrics.scores_from_counts``), and its 3D Dice is the mean over patients whose
truth holds the class of 2TP / (2TP + FP + FN), MONAI's per-volume Dice. Each class is
then summarised as its own table (``kdcore.summary.summarize``, Holm over its KD rows):
the same statistics as the mean over classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from kdcore.metrics import scores_from_counts
from kdcore.rows import METRICS
from kdcore.summary import StatsSettings, summarize


def has_classes(cases: pd.DataFrame) -> bool:
    """Whether the counts are per class (a multi-class grid)."""
    return "class" in cases and bool(cases["class"].notna().any())


def class_trials(trials: pd.DataFrame, cases: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """One row per trial and class: the trial's row with its metrics (``METRICS``) and
    TP / FP / FN those of the class, and a ``class`` column."""
    keys = [*axes, "variant", "seed"]
    rows = []
    for (*key, name), group in cases.groupby([*keys, "class"], sort=False):
        tp, fp, fn = (int(group[c].sum()) for c in ("tp", "fp", "fn"))
        present = group[(group["tp"] + group["fn"]) > 0]
        per_volume = 2 * present["tp"] / (2 * present["tp"] + present["fp"] + present["fn"])
        scores = scores_from_counts(tp, fp, fn)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "class": name,
                **{m: scores[m] for m in METRICS if m != "dice_3d"},
                "dice_3d": float(per_volume.mean()) if len(present) else np.nan,
                "tp": tp,
                "fp": fp,
                "fn": fn,
            }
        )
    own = pd.DataFrame(rows)
    rest = trials.drop(columns=[c for c in (*METRICS, "tp", "fp", "fn") if c in trials])
    return own.merge(rest, on=keys, how="left")


def summarize_classes(
    trials: pd.DataFrame,
    cases: pd.DataFrame,
    axes: Sequence[str] = (),
    stats: StatsSettings | None = None,
) -> pd.DataFrame:
    """``summarize`` of each class on its own (a ``class`` column first), in the order the
    classes first appear; empty when the counts are not per class."""
    if not has_classes(cases):
        return pd.DataFrame()
    per_trial = class_trials(trials, cases, axes)
    parts = []
    for name in cases["class"].drop_duplicates():
        own = per_trial[per_trial["class"] == name].drop(columns="class")
        counts = cases[cases["class"] == name].drop(columns="class")
        summary = summarize(own, counts, list(axes), stats)
        parts.append(summary.assign(**{"class": name}))
    out = pd.concat(parts, ignore_index=True)
    return out[["class", *[c for c in out.columns if c != "class"]]]

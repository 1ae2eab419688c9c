"""Segmentation metrics: the thesis's pooled slice metrics and per-volume 3D Dice.

Empty-mask policy (never "perfect"):

- Pooled metrics (TP, FP, FN summed over every slice): with no positive in the truth
  and none predicted (TP = FP = FN = 0) IoU, Dice, recall and precision are undefined:
  NaN. Otherwise a metric whose own denominator is 0 is: recall, when the truth has no
  positive (NaN); precision, when nothing is predicted but there was something to find:
  0.0, a complete miss (scikit-learn's ``zero_division=0``), so a model that predicts
  nothing scores 0 instead of dropping out of a mean. IoU and Dice are then 0.
- Per-volume 3D Dice: volumes whose truth is empty are left out (MONAI's
  ``ignore_empty=True``); the mean is over the others, NaN if every volume is empty.

The data stage refuses a split without foreground (``kdcore.data.splits``), so the NaN
cases do not reach a table.

Several classes: each class is scored as its own binary task (its pixels against all
others) under the same policy, and the mean over classes (a class that is NaN, absent
from the truth and the prediction alike, left out) is the row's score.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics import compute_dice


def pooled_counts(pred: torch.Tensor, target: torch.Tensor) -> tuple[int, int, int]:
    """TP, FP, FN summed over every pixel of every slice. pred, target: binary, same shape."""
    pred, target = pred.bool(), target.bool()
    tp = int((pred & target).sum())
    fp = int((pred & ~target).sum())
    fn = int((~pred & target).sum())
    return tp, fp, fn


def scores_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """IoU, Dice, recall and precision from pooled counts, under the module's empty-mask
    policy: all NaN when TP = FP = FN = 0; recall NaN when the truth has no positive;
    precision 0.0 when nothing is predicted but the truth has positives."""
    if tp + fp + fn == 0:
        return dict.fromkeys(("iou", "dice", "recall", "precision"), math.nan)
    return {
        "iou": tp / (tp + fp + fn),
        "dice": 2 * tp / (2 * tp + fp + fn),
        "recall": tp / (tp + fn) if tp + fn else math.nan,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
    }


def volume_dice(pred: torch.Tensor, target: torch.Tensor, volume_ids: np.ndarray) -> float:
    """Mean over volumes of the 3D Dice (MONAI ``compute_dice``).

    pred, target: (N, H, W) binary slices; volume_ids: (N,) volume of each slice.
    Volumes with empty truth are left out (``ignore_empty=True``); NaN if all are empty.
    """
    scores = []
    for vid in np.unique(volume_ids):
        sel = torch.from_numpy(np.flatnonzero(volume_ids == vid))
        p = pred[sel].float()[None, None]  # (1, 1, Z, H, W)
        t = target[sel].float()[None, None]
        score = float(compute_dice(p, t, include_background=True, ignore_empty=True))
        if not math.isnan(score):
            scores.append(score)
    return float(np.mean(scores)) if scores else math.nan


def volume_counts(
    pred: torch.Tensor, target: torch.Tensor, volume_ids: np.ndarray
) -> list[tuple[int, int, int, int]]:
    """(volume id, TP, FP, FN) of each volume, in id order: the per-patient counts that a
    bootstrap over test patients resamples. pred, target: (N, H, W) binary slices."""
    counts = []
    for vid in np.unique(volume_ids):
        sel = torch.from_numpy(np.flatnonzero(volume_ids == vid))
        counts.append((int(vid), *pooled_counts(pred[sel], target[sel])))
    return counts


SCORES = ("iou", "dice", "recall", "precision", "dice_3d")


def binary_metrics(pred: torch.Tensor, target: torch.Tensor, volume_ids: np.ndarray) -> dict:
    """Pooled IoU / Dice / recall / precision, raw TP / FP / FN, mean 3D Dice, and the
    counts of each volume (``volumes``: see ``volume_counts``) of one class; empty masks
    follow the module's policy (NaN, never a perfect score).

    pred, target: (N, H, W) bool, the class's pixels.
    """
    tp, fp, fn = pooled_counts(pred, target)
    return {
        **scores_from_counts(tp, fp, fn),
        "dice_3d": volume_dice(pred, target, volume_ids),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "volumes": volume_counts(pred, target, volume_ids),
    }


def segmentation_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    volume_ids: np.ndarray,
    names: tuple[str, ...] = ("foreground",),
) -> dict:
    """The metrics of predicted class maps against the truth.

    pred, target: (N, H, W) class indices (0 the background, k the class ``names[k-1]``).
    One class: ``binary_metrics`` of it. More: each class's ``binary_metrics`` under
    ``classes`` (by name), their mean over classes as the row's scores (``SCORES``; NaN
    classes left out), TP / FP / FN summed over classes and, per volume, its counts summed
    over classes (``volumes``) and per class (``volume_classes``: volume id -> one
    (TP, FP, FN) per class).
    """
    if len(names) == 1:
        return binary_metrics(pred > 0, target > 0, volume_ids)
    per_class = {
        n: binary_metrics(pred == k, target == k, volume_ids) for k, n in enumerate(names, start=1)
    }
    out: dict = {}
    for score in SCORES:
        values = [m[score] for m in per_class.values() if not math.isnan(m[score])]
        out[score] = float(np.mean(values)) if values else math.nan
    for count in ("tp", "fp", "fn"):
        out[count] = sum(m[count] for m in per_class.values())
    by_volume = [m["volumes"] for m in per_class.values()]
    out["volumes"] = [
        (rows[0][0], *(sum(r[i] for r in rows) for i in (1, 2, 3)))
        for rows in zip(*by_volume, strict=True)
    ]
    out["volume_classes"] = {
        rows[0][0]: [tuple(r[1:]) for r in rows] for rows in zip(*by_volume, strict=True)
    }
    out["classes"] = {
        n: {k: v for k, v in m.items() if k != "volumes"} for n, m in per_class.items()
    }
    return out

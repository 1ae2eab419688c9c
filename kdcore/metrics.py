"""Segmentation metrics: the thesis's pooled slice metrics and per-volume 3D Dice."""

from __future__ import annotations

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
    """IoU, Dice, recall and precision from pooled counts.

    Empty-mask policy: a ratio whose denominator is 0 (nothing predicted and nothing to
    find) counts as 1.0, a perfect answer.
    """

    def ratio(num: float, den: float) -> float:
        return num / den if den else 1.0

    return {
        "iou": ratio(tp, tp + fp + fn),
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "recall": ratio(tp, tp + fn),
        "precision": ratio(tp, tp + fp),
    }


def volume_dice(pred: torch.Tensor, target: torch.Tensor, volume_ids: np.ndarray) -> float:
    """Mean over volumes of the 3D Dice (MONAI ``compute_dice``).

    pred, target: (N, H, W) binary slices; volume_ids: (N,) volume of each slice.
    A volume without spleen scores 1.0 if nothing is predicted in it, else 0.0.
    """
    scores = []
    for vid in np.unique(volume_ids):
        sel = torch.from_numpy(np.flatnonzero(volume_ids == vid))
        p = pred[sel].float()[None, None]  # (1, 1, Z, H, W)
        t = target[sel].float()[None, None]
        scores.append(float(compute_dice(p, t, include_background=True, ignore_empty=False)))
    return float(np.mean(scores))


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


def segmentation_metrics(
    probs: torch.Tensor, target: torch.Tensor, volume_ids: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Pooled IoU / Dice / recall / precision, raw TP / FP / FN, mean 3D Dice, and the
    counts of each volume (``volumes``: see ``volume_counts``).

    probs: (N, H, W) sigmoid outputs; target: (N, H, W) in {0, 1}.
    """
    pred = probs > threshold
    tp, fp, fn = pooled_counts(pred, target)
    return {
        **scores_from_counts(tp, fp, fn),
        "dice_3d": volume_dice(pred, target.bool(), volume_ids),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "volumes": volume_counts(pred, target.bool(), volume_ids),
    }

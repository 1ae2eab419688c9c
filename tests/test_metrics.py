import math

import numpy as np
import pytest
import torch

from kdcore.metrics import pooled_counts, scores_from_counts, segmentation_metrics, volume_dice


def test_pooled_counts_and_scores_by_hand():
    pred = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]]])
    target = torch.tensor([[[1, 0], [0, 0]], [[1, 0], [1, 0]]])
    assert pooled_counts(pred, target) == (2, 1, 1)
    s = scores_from_counts(2, 1, 1)
    assert s == {"iou": 0.5, "dice": pytest.approx(2 / 3), "recall": 2 / 3, "precision": 2 / 3}


def test_empty_prediction_and_target_are_undefined_not_perfect():
    assert all(math.isnan(v) for v in scores_from_counts(0, 0, 0).values())


def test_nothing_predicted_is_a_complete_miss():
    assert scores_from_counts(0, 0, 5) == {"iou": 0.0, "dice": 0.0, "recall": 0.0, "precision": 0.0}


def test_nothing_to_find_leaves_recall_undefined():
    s = scores_from_counts(0, 3, 0)
    assert (s["iou"], s["dice"], s["precision"]) == (0.0, 0.0, 0.0) and math.isnan(s["recall"])


def test_volume_dice_ignores_volumes_with_empty_truth():
    target = torch.zeros(4, 2, 2, dtype=torch.bool)
    target[0, 0, 0] = True  # volume 0 has the organ; volume 1 has none
    pred = target.clone()
    pred[1, 1, 1] = True  # volume 0: one TP, one FP -> 2/3
    pred[3, 0, 0] = True  # a false positive in the empty volume: not scored
    assert volume_dice(pred, target, np.array([0, 0, 1, 1])) == pytest.approx(2 / 3)
    assert volume_dice(pred & False, target, np.array([0, 0, 1, 1])) == 0.0


def test_all_empty_truth_gives_undefined_metrics():
    pred = torch.tensor([[[1, 0]], [[0, 0]]])
    m = segmentation_metrics(pred, torch.zeros(2, 1, 2), np.array([0, 1]))
    assert math.isnan(m["dice_3d"]) and math.isnan(m["recall"])
    assert (m["tp"], m["fp"], m["fn"], m["dice"]) == (0, 1, 0, 0.0)
    m = segmentation_metrics(pred * 0, torch.zeros(2, 1, 2), np.array([0, 1]))
    assert all(math.isnan(m[k]) for k in ("dice", "iou", "recall", "precision", "dice_3d"))


def test_volume_dice_averages_over_volumes():
    target = torch.zeros(4, 2, 2, dtype=torch.bool)
    target[0, 0, 0] = target[2, 0, 0] = True
    pred = target.clone()
    pred[3, 1, 1] = True  # volume 1: one TP, one FP -> 2/3
    assert volume_dice(pred, target, np.array([0, 0, 1, 1])) == pytest.approx((1 + 2 / 3) / 2)


def test_predict_thresholds_the_sigmoid_at_one_half():
    from kdcore.data.classes import predicted_classes

    logits = torch.tensor([[[[2.2, -0.4]]]])  # sigmoid 0.9 and 0.4
    pred = predicted_classes(logits)
    target = torch.tensor([[[1, 1]]])
    m = segmentation_metrics(pred, target, np.array([0]))
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 1) and m["recall"] == 0.5

"""Per-class metrics, their mean, and the per-class statistics of a table."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from kdcore.metrics import segmentation_metrics
from kdcore.per_class import class_trials, summarize_classes
from kdcore.stats import bootstrap_pooled_dice_difference


def test_each_class_is_scored_and_the_row_is_their_mean():
    target = torch.tensor([[[1, 1, 2, 0]], [[0, 0, 2, 2]]])  # 2 slices of 1 x 4
    pred = torch.tensor([[[1, 0, 2, 0]], [[0, 1, 2, 0]]])
    m = segmentation_metrics(pred, target, np.array([0, 1]), ("a", "b"))
    assert m["classes"]["a"]["dice"] == pytest.approx(2 * 1 / (2 + 1 + 1))  # tp1 fp1 fn1
    assert m["classes"]["b"]["dice"] == pytest.approx(2 * 2 / (4 + 0 + 1))  # tp2 fp0 fn1
    assert m["dice"] == pytest.approx((0.5 + 0.8) / 2)
    assert (m["tp"], m["fp"], m["fn"]) == (3, 1, 2)
    assert m["volume_classes"] == {0: [(1, 0, 1), (1, 0, 0)], 1: [(0, 1, 0), (1, 0, 1)]}


def test_a_class_absent_from_truth_and_prediction_is_left_out_of_the_mean():
    target = torch.tensor([[[1, 0]]])
    m = segmentation_metrics(target.clone(), target, np.array([0]), ("a", "b"))
    assert math.isnan(m["classes"]["b"]["dice"]) and m["dice"] == 1.0


def test_one_class_gives_the_binary_metrics():
    target = torch.tensor([[[1, 0, 1]]])
    pred = torch.tensor([[[1, 1, 0]]])
    m = segmentation_metrics(pred, target, np.array([0]))
    assert m["dice"] == pytest.approx(0.5) and "classes" not in m


def test_bootstrap_of_one_class_equals_the_binary_bootstrap():
    rng = np.random.default_rng(0)
    kd, base = rng.integers(0, 50, (3, 6, 3)), rng.integers(0, 50, (3, 6, 3))
    flat = bootstrap_pooled_dice_difference(kd, base)
    nested = bootstrap_pooled_dice_difference(kd[:, :, None], base[:, :, None])
    assert flat == nested


def test_bootstrap_with_classes_averages_the_classes_pooled_dice():
    kd = np.array([[[[1, 0, 0], [1, 1, 0]]]])  # 1 seed, 1 patient, 2 classes
    base = np.array([[[[1, 1, 0], [1, 1, 0]]]])
    point = bootstrap_pooled_dice_difference(kd, base).mean
    assert point == pytest.approx((1.0 + 2 / 3) / 2 - (2 / 3 + 2 / 3) / 2)


def test_per_class_tables_come_from_the_patient_counts():
    rows, cases = [], []
    for variant, extra in (("baseline", 0), ("kd", 2)):
        for seed in (0, 1, 2):
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "dice": 0.0,
                    "iou": 0,
                    "recall": 0,
                    "precision": 0,
                    "dice_3d": 0,
                    "tp": 0,
                    "fp": 0,
                    "fn": 0,
                    "wall_s": 1.0,
                    "converged": True,
                    "stopped_early": False,
                    "steps": 10,
                }
            )
            for case in ("p1", "p2"):
                cases.append(
                    {
                        "variant": variant,
                        "seed": seed,
                        "case": case,
                        "class": "a",
                        "tp": 8 + extra + seed,
                        "fp": 2,
                        "fn": 2 - extra // 2,
                    }
                )
                cases.append(
                    {
                        "variant": variant,
                        "seed": seed,
                        "case": case,
                        "class": "b",
                        "tp": 5,
                        "fp": 5,
                        "fn": 0,
                    }
                )
    trials, cases = pd.DataFrame(rows), pd.DataFrame(cases)
    per = class_trials(trials, cases, [])
    one = per[(per["variant"] == "baseline") & (per["seed"] == 0) & (per["class"] == "a")]
    assert float(one["dice"].iloc[0]) == pytest.approx(2 * 16 / (32 + 4 + 4))
    assert float(one["dice_3d"].iloc[0]) == pytest.approx(2 * 8 / (16 + 2 + 2))
    summary = summarize_classes(trials, cases)
    assert list(summary["class"]) == ["a", "a", "b", "b"]
    b_kd = summary[(summary["class"] == "b") & (summary["variant"] == "kd")].iloc[0]
    assert b_kd["delta"] == pytest.approx(0.0)
    a_kd = summary[(summary["class"] == "a") & (summary["variant"] == "kd")].iloc[0]
    assert a_kd["delta"] > 0

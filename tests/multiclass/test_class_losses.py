"""The losses with several classes, against small hand-computed values; one class keeps
the binary numbers."""

import math

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from kdcore.losses import (
    ChannelWiseLoss,
    HintonLoss,
    PredictionMapLoss,
    RegionAffinityLoss,
    bernoulli_kl_with_logits,
    build_seg_loss,
)
from kdcore.losses.prediction_map import softmax_kl_with_logits


def softmax(v):
    e = np.exp(np.asarray(v, dtype=float) - np.max(v))
    return e / e.sum()


def test_softmax_kl_by_hand():
    s, t, temp = [1.0, 0.0, -1.0], [0.0, 2.0, 0.0], 2.0
    p, q = softmax(np.array(t) / temp), softmax(np.array(s) / temp)
    expected = float((p * np.log(p / q)).sum()) * temp**2
    as_map = lambda v: torch.tensor(v).view(1, 3, 1, 1)  # noqa: E731
    assert float(PredictionMapLoss(temp)(as_map(s), as_map(t))) == pytest.approx(expected, 1e-6)


def test_one_class_kl_is_the_softmax_kl_of_the_logit_and_zero():
    torch.manual_seed(0)
    s, t = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    pair = lambda x: torch.cat([torch.zeros_like(x), x], 1)  # noqa: E731
    binary = PredictionMapLoss(4.0)(s, t)
    assert torch.equal(binary, bernoulli_kl_with_logits(s, t, 4.0))  # the same numbers
    assert float(binary) == pytest.approx(float(softmax_kl_with_logits(pair(s), pair(t), 4.0)))


def test_hinton_with_classes_by_hand():
    s, t, temp = [0.5, 0.0, 1.0], [1.0, 1.0, -1.0], 4.0
    p, q = softmax(np.array(t) / temp), softmax(np.array(s) / temp)
    expected = -float((p * np.log(q)).sum()) * temp**2
    as_map = lambda v: torch.tensor(v).view(1, 3, 1, 1)  # noqa: E731
    assert float(HintonLoss(temp)(as_map(s), as_map(t))) == pytest.approx(expected, 1e-6)


def test_cwd_on_logits_compares_each_class_map_without_alignment():
    loss = ChannelWiseLoss(None, None, 1.0)
    assert isinstance(loss.align, torch.nn.Identity)
    s = torch.tensor([[[[0.0, 1.0]], [[2.0, 0.0]]]])  # (1, 2, 1, 2)
    t = torch.tensor([[[[1.0, 0.0]], [[2.0, 0.0]]]])
    p, q = softmax([1.0, 0.0]), softmax([0.0, 1.0])  # class 1's spatial distributions
    expected = float((p * np.log(p / q)).sum()) / 2  # class 2 agrees: mean over 2
    assert float(loss(s, t)) == pytest.approx(expected, 1e-6)


def test_segmentation_loss_with_classes_is_monai_dice_ce_by_hand():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 2.0]], [[0.0, 0.0]]]])  # (1, 3, 1, 2)
    target = torch.tensor([[[[0.0, 2.0]]]])  # pixel 0: background; pixel 1: class 2
    ours = build_seg_loss("dicebce", 3)(logits, target)
    monai = DiceCELoss(softmax=True, to_onehot_y=True, batch=True)(logits, target)
    assert float(ours) == pytest.approx(float(monai))
    p = logits[0, :, 0].softmax(0).T.numpy()  # (pixels, classes)
    onehot = np.array([[1, 0, 0], [0, 0, 1]])
    ce = -np.mean(np.log((p * onehot).sum(1)))
    inter, total = (p * onehot).sum(0), p.sum(0) + onehot.sum(0)
    dice = 1 - np.mean((2 * inter + 1e-5) / (total + 1e-5))
    assert float(ours) == pytest.approx(ce + dice, rel=1e-5)


def test_region_affinity_with_three_classes_by_hand():
    # one sample, classes 0, 1, 2 each one pixel; features are the prototypes
    target = torch.tensor([[[[0.0, 1.0, 2.0]]]])
    student = torch.tensor([[[[1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]])  # protos (1,0),(0,1),(1,1)
    teacher = torch.tensor([[[[1.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]]])  # (1,0),(1,0),(0,1)
    cos_s = [0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)]  # pairs (0,1), (0,2), (1,2)
    cos_t = [1.0, 0.0, 0.0]
    expected = np.mean([(a - b) ** 2 for a, b in zip(cos_s, cos_t, strict=True)])
    assert float(RegionAffinityLoss()(student, teacher, target)) == pytest.approx(expected, 1e-5)

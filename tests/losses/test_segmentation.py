"""The segmentation losses and the teacher's multi-task objective, by hand."""

import math

import pytest
import torch

from kdcore.errors import ConfigError
from kdcore.losses import SEG_LOSSES, MultiTaskLoss, build_seg_loss

# MONAI's smoothing terms (DiceLoss defaults): (2 I + 1e-5) / (P + G + 1e-5)
SMOOTH = 1e-5


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# two 2x2 slices; sample 1 has no foreground, which a per-slice Dice would score 0
PROBS = torch.tensor([[[[0.75, 0.25], [0.25, 0.5]]], [[[0.5, 0.5], [0.5, 0.5]]]])
LOGITS = PROBS.clone().apply_(logit)  # (B=2, 1, 2, 2)
MASK = torch.tensor([[[[1.0, 0], [0, 0]]], [[[0, 0], [0, 0]]]])

# pooled over the batch: I = 0.75, sum(p) = 1.75 + 2, sum(g) = 1
POOLED_DICE_LOSS = 1 - (2 * 0.75 + SMOOTH) / (3.75 + 1 + SMOOTH)
# BCE per pixel, mean over 8: three pixels at p=0.75 for their label, five at 0.5
BCE = -(3 * math.log(0.75) + 5 * math.log(0.5)) / 8


def test_dice_is_pooled_over_the_batch():
    value = float(build_seg_loss("dice")(LOGITS, MASK))
    assert value == pytest.approx(POOLED_DICE_LOSS, rel=1e-6)
    per_slice = 1 - ((1.5 + SMOOTH) / (2.75 + SMOOTH) + SMOOTH / (2 + SMOOTH)) / 2
    assert value != pytest.approx(per_slice, rel=1e-3)  # what batch=False would give


def test_dicebce_adds_binary_cross_entropy_with_weight_one():
    value = float(build_seg_loss("dicebce")(LOGITS, MASK))
    assert value == pytest.approx(POOLED_DICE_LOSS + BCE, rel=1e-6)


def test_a_perfect_prediction_has_dice_loss_near_zero():
    target = MASK.clone()
    logits = torch.where(target > 0, 30.0, -30.0)
    assert float(build_seg_loss("dice")(logits, target)) == pytest.approx(0, abs=1e-6)


def test_an_unknown_segmentation_loss_lists_the_valid_ones():
    with pytest.raises(
        ConfigError, match="unknown segmentation loss 'ce'; choose one of dice, dicebce"
    ):
        build_seg_loss("ce")
    assert SEG_LOSSES == ("dice", "dicebce")


def test_multitask_loss_is_seg_plus_weighted_reconstruction_mse():
    images = torch.zeros(2, 3, 2, 2)
    recon = torch.zeros(2, 3, 2, 2)
    recon[0, 0, 0, 0] = 2.0  # one error of 2 among 24 values: MSE = 4 / 24
    taps = {"logits": LOGITS, "recon": recon}
    total, parts = MultiTaskLoss()(taps, images, MASK)  # thesis: Dice+BCE, weight 0.2
    assert float(parts["seg"]) == pytest.approx(POOLED_DICE_LOSS + BCE, rel=1e-6)
    assert float(parts["recon"]) == pytest.approx(4 / 24, rel=1e-6)
    assert float(total) == pytest.approx(POOLED_DICE_LOSS + BCE + 0.2 * 4 / 24, rel=1e-6)
    assert not parts["seg"].requires_grad and not parts["recon"].requires_grad

    total, parts = MultiTaskLoss("dice", recon_weight=3.0)(taps, images, MASK)
    assert float(parts["seg"]) == pytest.approx(POOLED_DICE_LOSS, rel=1e-6)
    assert float(total) == pytest.approx(POOLED_DICE_LOSS + 3.0 * 4 / 24, rel=1e-6)


def test_multitask_loss_sends_gradients_to_both_heads():
    logits = LOGITS.clone().requires_grad_(True)
    recon = torch.zeros(2, 3, 2, 2, requires_grad=True)
    total, _ = MultiTaskLoss()({"logits": logits, "recon": recon}, torch.ones(2, 3, 2, 2), MASK)
    total.backward()
    # d(0.2 * mean((r - 1)^2)) / dr = 0.2 * 2 (r - 1) / 24 at r = 0
    assert torch.allclose(recon.grad, torch.full_like(recon, -0.4 / 24))
    assert logits.grad.abs().sum() > 0

"""Segmentation losses for single-logit outputs (MONAI's implementations)."""

from __future__ import annotations

from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from kdcore.errors import ConfigError

SEG_LOSSES = ("dice", "dicebce")


def build_seg_loss(name: str) -> nn.Module:
    """Dice (``dice``) or Dice + BCE (``dicebce``) on sigmoid(logits).

    Dice is computed over the whole batch (``batch=True``), as the reference flattens
    the batch: a per-slice Dice would be dominated by the many slices without spleen.
    """
    if name == "dice":
        return DiceLoss(sigmoid=True, batch=True)
    if name == "dicebce":
        return DiceCELoss(sigmoid=True, batch=True)
    raise ConfigError(f"unknown segmentation loss {name!r}; choose one of {', '.join(SEG_LOSSES)}")

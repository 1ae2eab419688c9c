"""Segmentation losses (MONAI's implementations): sigmoid of one logit for one class,
softmax over background and classes for more."""

from __future__ import annotations

from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from kdcore.errors import ConfigError

SEG_LOSSES = ("dice", "dicebce")


def build_seg_loss(name: str, out_channels: int = 1) -> nn.Module:
    """Dice (``dice``) or Dice + cross-entropy (``dicebce``) of the logits against the
    class-index target (B, 1, H, W).

    One channel: sigmoid Dice (+ binary cross-entropy). More: softmax Dice over every
    channel, the background included (+ cross-entropy over classes), the target one-hot
    encoded. Dice is computed over the whole batch (``batch=True``), as the reference
    flattens the batch: a per-slice Dice would be dominated by the many slices without
    the organ.
    """
    if name not in SEG_LOSSES:
        raise ConfigError(
            f"unknown segmentation loss {name!r}; choose one of {', '.join(SEG_LOSSES)}"
        )
    if out_channels == 1:
        binary = {"sigmoid": True, "batch": True}
        return DiceLoss(**binary) if name == "dice" else DiceCELoss(**binary)
    classes = {"softmax": True, "to_onehot_y": True, "batch": True}
    return DiceLoss(**classes) if name == "dice" else DiceCELoss(**classes)

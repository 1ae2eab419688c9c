"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.losses.maps import resize_to
from kdcore.losses.registry import FEATURE_SCALES, register_method


def attention_map(features: Tensor, p: int = 2) -> Tensor:
    """(B, C, H, W) -> (B, H*W): channel mean of |F|^p, L2-normalised per sample."""
    return F.normalize(features.abs().pow(p).mean(1).flatten(1), dim=1)


@register_method("at", FEATURE_SCALES)
@register_method("imd", FEATURE_SCALES)  # EMKD's importance maps are AT maps
class AttentionTransferLoss(nn.Module):
    """Mean squared difference of the normalised spatial attention maps.

    No parameters: the maps do not depend on channel counts, so teacher and student
    need no projection. The teacher map is resized to the student's grid first.
    As in the authors' code, the loss is ``(a_s - a_t).pow(2).mean()``.
    """

    def __init__(self, p: int = 2):
        super().__init__()
        self.p = p

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """student: (B, C_s, H, W); teacher: (B, C_t, h, w) -> scalar."""
        a_s = attention_map(student, self.p)
        a_t = attention_map(resize_to(teacher, student), self.p)
        return (a_s - a_t).pow(2).mean()

"""EMKD's region-affinity term (Qin et al., "Efficient Medical Image Segmentation Based on
Knowledge Distillation", IEEE TMI 2021).

EMKD's other feature term, importance-map distillation, uses attention-transfer maps
(channel mean of squared activations) with an MSE: it is ``AttentionTransferLoss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.losses.registry import FEATURE_SCALES, register_method


def region_affinity(features: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """Cosine similarity of the foreground and background prototypes of each sample.

    features: (B, C, H, W); mask: (B, 1, H, W) in [0, 1] on the same grid.
    A prototype is the mask-weighted mean feature of its region. Returns (B,).
    """
    fg = (features * mask).sum((2, 3)) / (mask.sum((2, 3)) + eps)  # (B, C)
    bg = (features * (1 - mask)).sum((2, 3)) / ((1 - mask).sum((2, 3)) + eps)
    return F.cosine_similarity(fg, bg, dim=1, eps=eps)


@register_method("rad", FEATURE_SCALES, uses_target=True)
class RegionAffinityLoss(nn.Module):
    """Region-affinity distillation (RAD) for binary segmentation.

    With two regions (spleen, background) the affinity matrix has one free entry: the
    cosine similarity of the two region prototypes. The loss is the squared difference
    of that entry between teacher and student, averaged over samples that contain both
    regions (others carry no affinity). Regions come from the ground-truth mask, resized
    (nearest) to each feature grid. No parameters, any channel counts.
    """

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor) -> Tensor:
        """student: (B, C_s, H, W); teacher: (B, C_t, h, w); target: (B, 1, H0, W0)."""
        m_s = F.interpolate(target, size=student.shape[-2:], mode="nearest")
        m_t = F.interpolate(target, size=teacher.shape[-2:], mode="nearest")
        both = (m_s.flatten(1).amax(1) > 0) & (m_s.flatten(1).amin(1) < 1)  # (B,)
        diff = (region_affinity(student, m_s) - region_affinity(teacher, m_t)).pow(2)
        return torch.where(both, diff, 0.0).sum() / both.sum().clamp(min=1)

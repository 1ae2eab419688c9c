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


def class_affinities(features: Tensor, target: Tensor, classes: int, eps: float = 1e-6):
    """Cosine similarities of the class prototypes of each sample, and which pairs count.

    features: (B, C, H, W); target: (B, 1, H, W) class indices on the same grid, below
    ``classes``. Returns ((B, K, K) similarities, (B, K, K) bool: both classes present,
    above the diagonal), K = ``classes``.
    """
    regions = F.one_hot(target[:, 0].long(), classes).permute(0, 3, 1, 2).to(features.dtype)
    area = regions.sum((2, 3))  # (B, K)
    protos = torch.einsum("bkhw,bchw->bkc", regions, features) / (area[..., None] + eps)
    protos = F.normalize(protos, dim=2, eps=eps)
    present = area > 0
    pairs = present[:, :, None] & present[:, None, :]
    pairs = pairs & torch.ones_like(pairs[0]).triu(1)
    return protos @ protos.transpose(1, 2), pairs


@register_method("rad", FEATURE_SCALES, uses_target=True)
class RegionAffinityLoss(nn.Module):
    """Region-affinity distillation (RAD).

    With two regions (organ, background) the affinity matrix has one free entry: the
    cosine similarity of the two region prototypes. The loss is the squared difference
    of that entry between teacher and student, averaged over samples that contain both
    regions (others carry no affinity). With more classes, each pair of classes present
    in a sample is an entry, and the loss averages their squared differences over
    samples with two or more classes. Regions come from the ground-truth classes,
    resized (nearest) to each feature grid. No parameters, any channel counts.
    """

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor) -> Tensor:
        """student: (B, C_s, H, W); teacher: (B, C_t, h, w); target: (B, 1, H0, W0)
        class indices."""
        m_s = F.interpolate(target, size=student.shape[-2:], mode="nearest")
        m_t = F.interpolate(target, size=teacher.shape[-2:], mode="nearest")
        classes = int(target.amax()) + 1
        if classes > 2:  # (the binary task keeps its own, equal, arithmetic)
            a_s, p_s = class_affinities(student, m_s, classes)
            a_t, p_t = class_affinities(teacher, m_t, classes)
            pairs = p_s & p_t  # present on both grids
            diff = torch.where(pairs, (a_s - a_t).pow(2), 0.0).sum((1, 2))
            counted = pairs.sum((1, 2))
            per_sample = diff / counted.clamp(min=1)
            has = counted > 0
            return torch.where(has, per_sample, 0.0).sum() / has.sum().clamp(min=1)
        both = (m_s.flatten(1).amax(1) > 0) & (m_s.flatten(1).amin(1) < 1)  # (B,)
        diff = (region_affinity(student, m_s) - region_affinity(teacher, m_t)).pow(2)
        return torch.where(both, diff, 0.0).sum() / both.sum().clamp(min=1)

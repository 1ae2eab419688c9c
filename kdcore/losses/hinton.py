"""Hinton et al. (2015) logit distillation: soft targets per pixel."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.losses.maps import resize_to
from kdcore.losses.registry import LOGITS, register_method


@register_method("hinton", LOGITS, temperature="pmd_temperature")
class HintonLoss(nn.Module):
    """Soft-target cross-entropy at temperature T, times T^2, averaged over pixels.

    One class: ``BCE(sigmoid(s/T), target=sigmoid(t/T))``; more: the cross-entropy of
    ``softmax(s/T)`` against ``softmax(t/T)`` over the channels. It differs from the
    prediction-map KL only by the teacher's entropy, a constant for the student: same
    gradients, but the value does not reach 0 when the maps agree.
    """

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """Both (B, C, H, W) logits -> scalar."""
        t = resize_to(teacher_logits, student_logits) / self.temperature
        s = student_logits / self.temperature
        if s.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(s, t.sigmoid()) * self.temperature**2
        soft = -(t.softmax(1) * s.log_softmax(1)).sum(1).mean()
        return soft * self.temperature**2

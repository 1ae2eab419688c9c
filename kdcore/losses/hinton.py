"""Hinton et al. (2015) logit distillation, binary form."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.losses.maps import resize_to
from kdcore.losses.registry import LOGITS, register_method


@register_method("hinton", LOGITS, temperature="pmd_temperature")
class HintonLoss(nn.Module):
    """Soft-target binary cross-entropy at temperature T, times T^2.

    ``BCE(sigmoid(s/T), target=sigmoid(t/T))`` per pixel, averaged. It differs from the
    prediction-map KL only by the teacher's entropy, a constant for the student: same
    gradients, but the value does not reach 0 when the maps agree.
    """

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """Both (B, 1, H, W) logits -> scalar."""
        t = resize_to(teacher_logits, student_logits) / self.temperature
        s = student_logits / self.temperature
        return F.binary_cross_entropy_with_logits(s, t.sigmoid()) * self.temperature**2

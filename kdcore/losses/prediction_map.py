"""Prediction-map distillation for single-logit (binary) segmentation."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.losses.maps import resize_to
from kdcore.losses.registry import LOGITS, register_method


def bernoulli_kl_with_logits(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Mean over pixels of KL(Bern(sigmoid(t/T)) || Bern(sigmoid(s/T))), times T^2.

    student, teacher: logits of the same shape, e.g. (B, 1, H, W). Zero only where the
    two maps agree. (The reference applied softmax over one channel: identically zero.)
    """
    t = teacher / temperature
    s = student / temperature
    p_t = t.sigmoid()
    # log p and log(1 - p) through logsigmoid, stable for large logits
    kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (
        F.logsigmoid(-t) - F.logsigmoid(-s)
    )
    return kl.mean() * temperature**2


@register_method("pmd", LOGITS, temperature="pmd_temperature")
class PredictionMapLoss(nn.Module):
    """Temperature-scaled Bernoulli KL between teacher and student prediction maps."""

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """Both (B, 1, H, W); the teacher map is resized if its grid differs."""
        teacher_logits = resize_to(teacher_logits, student_logits)
        return bernoulli_kl_with_logits(student_logits, teacher_logits, self.temperature)

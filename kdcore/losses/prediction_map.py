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


def reference_softmax_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """The reference code's prediction-map loss: KL between softmaxes over the channel
    axis, times T^2. With one output channel both softmaxes are 1 everywhere, so it is
    identically zero (and so is its gradient). Kept to reproduce the thesis protocol."""
    log_s = F.log_softmax(student / temperature, dim=1)
    p_t = F.softmax(teacher / temperature, dim=1)
    return F.kl_div(log_s, p_t, reduction="batchmean") * temperature**2


PMD_MODES = ("kl", "reference")


@register_method("pmd", LOGITS, temperature="pmd_temperature", modes={"mode": "pmd_mode"})
class PredictionMapLoss(nn.Module):
    """Temperature-scaled Bernoulli KL between teacher and student prediction maps.

    ``mode="reference"`` (``kd.pmd_mode``, the thesis protocol) computes what the
    reference code computed instead: ``reference_softmax_kl``, identically zero.
    """

    def __init__(self, temperature: float = 4.0, mode: str = "kl"):
        super().__init__()
        if mode not in PMD_MODES:
            raise ValueError(f"mode must be one of {', '.join(PMD_MODES)}, got {mode!r}")
        self.temperature = temperature
        self.mode = mode

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """Both (B, 1, H, W); the teacher map is resized if its grid differs."""
        teacher_logits = resize_to(teacher_logits, student_logits)
        if self.mode == "reference":
            return reference_softmax_kl(student_logits, teacher_logits, self.temperature)
        return bernoulli_kl_with_logits(student_logits, teacher_logits, self.temperature)

"""Prediction-map distillation: the KL between teacher and student class probabilities."""

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


def softmax_kl_with_logits(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Mean over pixels of KL(softmax(t/T) || softmax(s/T)) over the channel axis, times
    T^2. student, teacher: logits (B, C, H, W) with C >= 2."""
    t = (teacher / temperature).log_softmax(1)
    s = (student / temperature).log_softmax(1)
    return (t.exp() * (t - s)).sum(1).mean() * temperature**2


def prediction_map_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """The KL of the class probabilities, times T^2: the Bernoulli KL of one logit (the
    binary task) or the softmax KL over the channels of more. (The Bernoulli KL of
    logit x is the softmax KL of the logit pair (0, x).)"""
    if student.shape[1] == 1:
        return bernoulli_kl_with_logits(student, teacher, temperature)
    return softmax_kl_with_logits(student, teacher, temperature)


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
    """Temperature-scaled KL between teacher and student prediction maps
    (``prediction_map_kl``: Bernoulli for one class, softmax over more).

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
        """Both (B, C, H, W); the teacher map is resized if its grid differs."""
        teacher_logits = resize_to(teacher_logits, student_logits)
        if self.mode == "reference":
            return reference_softmax_kl(student_logits, teacher_logits, self.temperature)
        return prediction_map_kl(student_logits, teacher_logits, self.temperature)

"""Multi-scale contrastive distillation: InfoNCE between teacher and student taps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.losses.maps import resize_to


def info_nce(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """InfoNCE with in-batch negatives.

    student, teacher: (B, D) per-sample embeddings. Sample i of the student is pulled
    towards sample i of the teacher and pushed from the teacher's other samples.
    Cosine similarity (both sides L2-normalised) divided by ``temperature``.
    """
    if student.shape[0] < 2:
        raise ValueError("InfoNCE needs a batch of at least 2 samples (negatives are the others)")
    s = F.normalize(student, dim=1)
    t = F.normalize(teacher, dim=1)
    logits = s @ t.T / temperature  # (B, B): row i compares student i with every teacher sample
    labels = torch.arange(s.shape[0], device=s.device)
    return F.cross_entropy(logits, labels)


class ContrastiveTapLoss(nn.Module):
    """InfoNCE between one teacher tap and the matching student tap (Biswas, 2024).

    A 1x1 projection head, trained with the student, maps the teacher's channels to the
    student's; the teacher map is resized (bilinear) to the student's grid. Each sample's
    whole map is flattened to one vector, as in the thesis.

    The head and the resize are both linear, so projecting first gives the same result
    and is cheaper where the teacher grid is the coarser one (the bottleneck: 16x fewer
    pixels at paper shapes). The head is applied as an einsum: as a 1x1 convolution
    followed by the resize, torch.compile's inductor (torch 2.13, CPU) returned a zero
    gradient for the bottleneck head when all four MTMS terms were compiled together.
    """

    def __init__(self, teacher_channels: int, student_channels: int, temperature: float = 0.4):
        super().__init__()
        self.head = nn.Conv2d(teacher_channels, student_channels, 1)
        self.temperature = temperature

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """student: (B, C_s, H_s, W_s); teacher: (B, C_t, H_t, W_t) -> scalar loss."""
        w = self.head.weight[:, :, 0, 0]  # (C_s, C_t, 1, 1) -> (C_s, C_t)
        t = torch.einsum("bchw,oc->bohw", teacher, w) + self.head.bias.view(1, -1, 1, 1)
        t = resize_to(t, student)  # (B, C_s, H_t, W_t) -> (B, C_s, H_s, W_s)
        return info_nce(student.flatten(1), t.flatten(1), self.temperature)

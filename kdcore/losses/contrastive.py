"""Multi-scale contrastive distillation: InfoNCE between teacher and student taps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.losses.maps import resize_to
from kdcore.losses.registry import FEATURE_SCALES, register_method


def info_nce(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """InfoNCE with in-batch negatives.

    student, teacher: (B, D) per-sample embeddings. Sample i of the student is pulled
    towards sample i of the teacher and pushed from the teacher's other samples.
    Cosine similarity (both sides L2-normalised) divided by ``temperature``.

    The cosines are the raw (B, B) Gram matrix divided by the outer product of the norms,
    the same numbers as normalising first (``F.normalize``, eps 1e-12) without writing
    two normalised (B, D) copies and their gradients: D is up to 1M at paper shapes.
    """
    if student.shape[0] < 2:
        raise ValueError("InfoNCE needs a batch of at least 2 samples (negatives are the others)")
    gram = student @ teacher.T  # (B, B): row i compares student i with every teacher sample
    s_norm = torch.linalg.vector_norm(student, dim=1).clamp_min(1e-12)
    t_norm = torch.linalg.vector_norm(teacher, dim=1).clamp_min(1e-12)
    logits = gram / (s_norm[:, None] * t_norm[None, :] * temperature)
    labels = torch.arange(student.shape[0], device=student.device)
    return F.cross_entropy(logits, labels)


@register_method("infonce", FEATURE_SCALES, channels=True, temperature="temperature", pairs=True)
class ContrastiveTapLoss(nn.Module):
    """InfoNCE between one teacher tap and the matching student tap (Biswas, 2024).

    A 1x1 projection head, trained with the student, maps the teacher's channels to the
    student's; the teacher map is resized (bilinear) to the student's grid. Each sample's
    whole map is flattened to one vector, as in the thesis.

    The head and the resize are both linear, so projecting first gives the same result
    and is cheaper where the teacher grid is the coarser one (the bottleneck: 16x fewer
    pixels at paper shapes). The head is applied as a matrix product over the flattened
    pixels (no copy of the teacher map, whose backward reads it once): as a 1x1
    convolution followed by the resize, torch.compile's inductor (torch 2.13, CPU) returned
    a zero gradient for the bottleneck head when all four MTMS terms were compiled together.
    """

    def __init__(self, teacher_channels: int, student_channels: int, temperature: float = 0.4):
        super().__init__()
        self.head = nn.Conv2d(teacher_channels, student_channels, 1)
        self.temperature = temperature

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """student: (B, C_s, H_s, W_s); teacher: (B, C_t, H_t, W_t) -> scalar loss."""
        b, _, h, w = teacher.shape
        weight = self.head.weight[:, :, 0, 0].expand(b, -1, -1)  # (B, C_s, C_t)
        bias = self.head.bias[:, None].expand(b, -1, h * w)
        # (B, C_s, H_t * W_t); torch.matmul would copy the whole teacher map first
        t = torch.baddbmm(bias, weight, teacher.flatten(2))
        t = resize_to(t.view(b, -1, h, w), student)  # -> (B, C_s, H_s, W_s)
        return info_nce(student.flatten(1), t.flatten(1), self.temperature)

"""Multi-scale contrastive distillation: InfoNCE between teacher and student taps."""

from __future__ import annotations

import math

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


HEADS = ("trained", "random")


@register_method(
    "infonce",
    FEATURE_SCALES,
    channels=True,
    temperature="temperature",
    pairs=True,
    modes={"heads": "heads"},
)
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

    ``heads="random"`` is the reference code's way (``kd.heads``, the thesis protocol): a
    new, untrained head at every step, so the teacher's channels are mixed at random.
    """

    def __init__(
        self,
        teacher_channels: int,
        student_channels: int,
        temperature: float = 0.4,
        heads: str = "trained",
    ):
        super().__init__()
        if heads not in HEADS:
            raise ValueError(f"heads must be one of {', '.join(HEADS)}, got {heads!r}")
        self.head = nn.Conv2d(teacher_channels, student_channels, 1)
        self.head.requires_grad_(heads == "trained")
        self.temperature = temperature
        self.heads = heads

    def _random_head(self) -> tuple[Tensor, Tensor]:
        """Weights of a freshly made, untrained 1x1 conv (PyTorch's default init)."""
        weight = nn.init.kaiming_uniform_(torch.empty_like(self.head.weight), a=math.sqrt(5))
        bound = 1 / math.sqrt(weight.shape[1])
        return weight, torch.empty_like(self.head.bias).uniform_(-bound, bound)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """student: (B, C_s, H_s, W_s); teacher: (B, C_t, H_t, W_t) -> scalar loss."""
        b, _, h, w = teacher.shape
        head_w, head_b = (
            self._random_head() if self.heads == "random" else (self.head.weight, self.head.bias)
        )
        weight = head_w[:, :, 0, 0].expand(b, -1, -1)  # (B, C_s, C_t)
        bias = head_b[:, None].expand(b, -1, h * w)
        # (B, C_s, H_t * W_t); torch.matmul would copy the whole teacher map first
        t = torch.baddbmm(bias, weight, teacher.flatten(2))
        t = resize_to(t.view(b, -1, h, w), student)  # -> (B, C_s, H_s, W_s)
        return info_nce(student.flatten(1), t.flatten(1), self.temperature)

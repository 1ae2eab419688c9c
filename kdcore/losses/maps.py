"""Small helpers shared by the distillation losses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def resize_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of ``x`` (B, C, h, w) to the spatial grid of ``like`` (no-op if equal)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

"""The multi-task teacher's objective: segmentation plus input reconstruction."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.losses.segmentation import build_seg_loss


class MultiTaskLoss(nn.Module):
    """``seg(logits, mask) + recon_weight * MSE(recon, image)`` (thesis: Dice+BCE, 0.2)."""

    def __init__(self, seg_loss: str = "dicebce", recon_weight: float = 0.2, out_channels: int = 1):
        super().__init__()
        self.seg = build_seg_loss(seg_loss, out_channels)
        self.recon_weight = recon_weight

    def forward(
        self, taps: dict[str, Tensor], images: Tensor, target: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """taps: teacher output with ``recon``; images: (B, 3, H, W); target: (B, 1, H, W)
        class indices."""
        seg = self.seg(taps["logits"], target)
        recon = F.mse_loss(taps["recon"], images)
        total = seg + self.recon_weight * recon
        return total, {"seg": seg.detach(), "recon": recon.detach()}

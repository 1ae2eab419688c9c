"""Feature-map MSE with a trained regressor (FitNets: Romero et al., ICLR 2015)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.losses.maps import resize_to
from kdcore.losses.registry import FEATURE_SCALES, register_method


@register_method("mse", FEATURE_SCALES, channels=True)
class FeatureMSELoss(nn.Module):
    """MSE between a 1x1 regressor of the student map and the teacher map.

    As in FitNets the regressor sits on the student side (student channels -> teacher
    channels) and is trained with the student; the teacher map is resized to the
    student's grid. This is the thesis's "MSE instead of contrastive" comparison.
    """

    def __init__(self, teacher_channels: int, student_channels: int):
        super().__init__()
        self.regressor = nn.Conv2d(student_channels, teacher_channels, 1)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """student: (B, C_s, H, W); teacher: (B, C_t, h, w) -> scalar."""
        return F.mse_loss(self.regressor(student), resize_to(teacher, student))

"""Channel-wise distillation (CWD: Shu et al., ICCV 2021)."""

from __future__ import annotations

from torch import Tensor, nn

from kdcore.losses.maps import resize_to
from kdcore.losses.registry import FEATURE_SCALES, LOGITS, register_method


def channel_wise_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL between per-channel spatial distributions, times T^2.

    student, teacher: (B, C, H, W). Each channel is turned into a distribution over its
    H*W positions by a softmax at ``temperature``; the KL(teacher || student) is summed
    over positions and averaged over channels and samples.
    """
    s = (student / temperature).flatten(2)  # (B, C, HW)
    t = (teacher / temperature).flatten(2)
    kl = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1)  # (B, C)
    return kl.mean() * temperature**2


@register_method("cwd", (*FEATURE_SCALES, *LOGITS), channels=True, temperature="cwd_temperature")
class ChannelWiseLoss(nn.Module):
    """CWD on feature maps: a trained 1x1 conv aligns the student's channels to the
    teacher's (as in the paper), the teacher map is resized to the student's grid. On
    the logits (``cwd@logits``, the paper's own use in segmentation: one spatial
    distribution per class), whose channels are the same classes, nothing is aligned."""

    def __init__(
        self, teacher_channels: int | None, student_channels: int | None, temperature: float = 4.0
    ):
        super().__init__()
        if teacher_channels is None or student_channels is None:  # the logits
            self.align: nn.Module = nn.Identity()
        else:
            self.align = nn.Conv2d(student_channels, teacher_channels, 1)
        self.temperature = temperature

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """student: (B, C_s, H, W); teacher: (B, C_t, h, w) -> scalar."""
        return channel_wise_kl(self.align(student), resize_to(teacher, student), self.temperature)

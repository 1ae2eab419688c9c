"""Teacher and student networks."""

from kdcore.models.transunet import TransUNet
from kdcore.models.unet import TAPS, UNet, build_student, build_teacher, count_parameters

TEACHER_ARCHS = ("t1", "t2")  # the multi-task U-Net, the multi-task TransUNet

__all__ = [
    "TAPS",
    "TEACHER_ARCHS",
    "TransUNet",
    "UNet",
    "build_student",
    "build_teacher",
    "count_parameters",
]

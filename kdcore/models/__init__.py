"""Teacher and student networks."""

from kdcore.models.unet import TAPS, UNet, build_student, build_teacher, count_parameters

__all__ = [
    "TAPS",
    "UNet",
    "build_student",
    "build_teacher",
    "count_parameters",
]

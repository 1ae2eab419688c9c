"""Teacher and student networks, and the teacher registry."""

from kdcore.models.teachers import (
    TEACHERS,
    student_name,
    teacher_name,
    teacher_network,
    teacher_settings,
)
from kdcore.models.transunet import TransUNet
from kdcore.models.unet import (
    FEATURE_TAPS,
    TAPS,
    UNet,
    build_student,
    build_teacher,
    count_parameters,
)

__all__ = [
    "FEATURE_TAPS",
    "TAPS",
    "TEACHERS",
    "TransUNet",
    "UNet",
    "build_student",
    "build_teacher",
    "count_parameters",
    "student_name",
    "teacher_name",
    "teacher_network",
    "teacher_settings",
]

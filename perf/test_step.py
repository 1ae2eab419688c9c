"""One training step: student only, KD as this suite does it, KD as the reference did it.

- student: S1 forward + Dice + backward + optimiser step.
- kd: the same plus the frozen teacher as the suite runs it (``models.teacher_taps``:
  inference mode, channels_last, WITHOUT its reconstruction decoder) and the four MTMS
  terms with persistent projection heads.
- kd-cached: as kd, but the teacher's taps come from the float16 teacher-output cache.
- kd-cached-compiled: as kd-cached, with the objective through torch.compile.
- student-nhwc, kd-cached-nhwc: as student and kd-cached, with the student, the heads and
  the batch in the channels_last layout (``student.fit.channels_last=true``).
- reference: the teacher runs both decoders under no_grad in the default layout and the
  1x1 channel maps are created anew at every step (the thesis code's way), otherwise as kd.
At 256x256 (T1, batch 4, as measured in the stack notes) and at the quick profile's size
(64x64, the width-16 teacher, batch 16).
"""

import numpy as np
import pytest
import torch
from torch import nn

from kdcore.data.slices import SliceData
from kdcore.losses import MTMS_TERMS, THESIS_WEIGHTS, DistillationLoss, maybe_compile
from kdcore.models import build_student, build_teacher
from kdcore.teacher import freeze, teacher_outputs, teacher_taps

SETTINGS = {"paper-256": (256, 64, 4), "quick-64": (64, 16, 16)}  # size, teacher width, batch


def setup(setting: str):
    size, width, batch = SETTINGS[setting]
    torch.manual_seed(0)
    student, teacher = build_student(16), build_teacher(width, 4).eval().requires_grad_(False)
    x = torch.rand(batch, 3, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.9).float()
    return student, teacher, x, y


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize(
    "kind",
    [
        "student",
        "student-nhwc",
        "kd",
        "kd-cached",
        "kd-cached-nhwc",
        "kd-cached-compiled",
        "reference",
    ],
)
def test_training_step(benchmark, setting, kind, tmp_path):
    student, teacher, x, y = setup(setting)
    nhwc = kind.endswith("-nhwc")
    kind = kind.removesuffix("-nhwc")
    cached = None
    if kind != "reference":
        freeze(teacher)
    if kind.startswith("kd-cached"):
        n = len(x)
        data = SliceData(
            x[:, 0].numpy().astype(np.float16),
            y[:, 0].numpy().astype(np.uint8),
            np.zeros(n, np.int32),
            np.arange(n, dtype=np.int32),
            ["bench"],
            "bench",
        )
        cached = teacher_outputs(teacher, data, tmp_path / "outputs")
        benchmark.extra_info["cache_bytes_per_slice"] = cached.bytes_per_slice
    terms = () if kind == "student" else MTMS_TERMS
    objective = DistillationLoss(terms, THESIS_WEIGHTS, student.tap_channels, teacher.tap_channels)
    optimizer = torch.optim.AdamW([*student.parameters(), *objective.parameters()], 1e-3)
    compute = maybe_compile(objective, kind.endswith("compiled"))
    if nhwc:
        student.to(memory_format=torch.channels_last)
        objective.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        taps = student(x)
        t_taps = None
        if cached is not None:
            t_taps = cached(np.arange(len(x)))
        elif kind == "kd":
            t_taps = teacher_taps(teacher, x)
        elif kind == "reference":
            with torch.no_grad():
                t_taps = teacher(x, with_recon=True)
        if kind == "reference":  # fresh, untrained channel maps every step
            for term in objective.kd.values():
                if hasattr(term, "head"):
                    term.head = nn.Conv2d(term.head.in_channels, term.head.out_channels, 1)
        loss, _ = compute(taps, y, t_taps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # compiles (kd-cached-compiled) or warms up
    rounds = 4 if setting == "paper-256" else 20
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)

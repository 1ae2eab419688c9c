"""KD objective forward+backward at the thesis's shapes, eager vs torch.compile.

Batch 20, 256x256, T1 taps (enc 128x64x64, bottleneck 1024x16x16, dec 64x256x256, logits)
against S1 / S2 taps, for every subset of the MTMS terms. Compile time (first call) is
recorded on its own in ``extra_info``, never inside the steady-state timing.
"""

import itertools
import time

import pytest
import torch

from kdcore.losses import MTMS_TERMS, THESIS_WEIGHTS, CompiledLoss, DistillationLoss
from kdcore.models import build_student

BATCH, SIZE = 20, 256
T1_TAPS = {  # T1 at 256x256 (shapes as in the thesis)
    "enc": (128, 64, 64),
    "bottleneck": (1024, 16, 16),
    "dec": (64, 256, 256),
    "logits": (1, 256, 256),
}
SUBSETS = ["+".join(s) for r in range(1, 5) for s in itertools.combinations(MTMS_TERMS, r)]


def tap_shapes(model, size: int) -> dict[str, tuple[int, ...]]:
    with torch.no_grad():
        taps = model.eval()(torch.zeros(1, 3, size, size), with_recon=False)
    return {k: tuple(v.shape[1:]) for k, v in taps.items()}


STUDENTS = {"S1": build_student(16), "S2": build_student(32)}


def taps(shapes, requires_grad: bool):
    return {k: torch.randn(BATCH, *s).requires_grad_(requires_grad) for k, s in shapes.items()}


def kd_case(student: str, terms: str, mode: str):
    """(loss function, student taps, target, teacher taps) of one benchmark case."""
    model = STUDENTS[student]
    s_taps = taps(tap_shapes(model, SIZE), requires_grad=True)
    t_taps = taps(T1_TAPS, requires_grad=False)
    target = (torch.rand(BATCH, 1, SIZE, SIZE) > 0.9).float()
    objective = DistillationLoss(
        terms.split("+"), THESIS_WEIGHTS, model.tap_channels, {k: s[0] for k, s in T1_TAPS.items()}
    )
    fn = CompiledLoss(objective) if mode == "compiled" else objective
    return fn, s_taps, target, t_taps


@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("terms", SUBSETS)
@pytest.mark.parametrize("student", list(STUDENTS))
def test_kd_loss_fwd_bwd(benchmark, student, terms, mode):
    fn, s_taps, target, t_taps = kd_case(student, terms, mode)

    def step():
        total, _ = fn(s_taps, target, t_taps)
        total.backward()

    start = time.perf_counter()
    step()  # compiles (compiled) or warms up (eager)
    benchmark.extra_info["first_call_s"] = time.perf_counter() - start
    benchmark.extra_info["fell_back_to_eager"] = getattr(fn, "eager", False)
    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)

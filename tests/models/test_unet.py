import pytest
import torch

from kdcore.losses import MTMS_TERMS, THESIS_WEIGHTS, DistillationLoss
from kdcore.models import build_student, build_teacher, count_parameters
from kdcore.teacher import freeze, teacher_taps


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda: build_teacher(64, 4), 43_236_036),  # T1
        (lambda: build_student(16), 57_297),  # S1, U-Net-S
        (lambda: build_student(32), 227_233),  # S2, U-Net
    ],
)
def test_parameter_counts_match_the_thesis(build, expected):
    assert count_parameters(build()) == expected


def test_student_taps_have_the_thesis_shapes_at_256():
    taps = build_student(16)(torch.zeros(2, 3, 256, 256))
    assert taps["enc"].shape == (2, 32, 64, 64)
    assert taps["bottleneck"].shape == (2, 64, 64, 64)
    assert taps["dec"].shape == (2, 16, 256, 256)
    assert taps["logits"].shape == (2, 1, 256, 256)


def test_small_teacher_taps_and_channels():
    teacher = build_teacher(8, 3)
    taps = teacher(torch.zeros(2, 3, 32, 32))
    assert taps["enc"].shape == (2, 16, 8, 8)  # output of the 2nd pooling
    assert taps["bottleneck"].shape == (2, 64, 4, 4)
    assert taps["dec"].shape == (2, 8, 32, 32)
    assert taps["recon"].shape == (2, 3, 32, 32)
    assert teacher.tap_channels == {"enc": 16, "bottleneck": 64, "dec": 8}


def test_teacher_skips_reconstruction_decoder_when_distilling():
    teacher = build_teacher(8, 3)
    calls = []
    teacher.recon_decoder.register_forward_hook(lambda *_: calls.append(1))
    taps = teacher(torch.zeros(2, 3, 32, 32), with_recon=False)
    assert "recon" not in taps and not calls
    teacher(torch.zeros(2, 3, 32, 32))
    assert calls == [1]


def test_width_multiplier_makes_a_student_family():
    sizes = [count_parameters(build_student(w)) for w in (8, 16, 32, 64)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_frozen_teacher_taps_match_eval_mode_and_can_feed_trained_heads():
    torch.manual_seed(0)
    teacher, student = build_teacher(4, 2), build_student(4)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        expected = teacher.eval()(x, with_recon=False)
    taps = teacher_taps(freeze(teacher), x)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert set(taps) == set(expected)
    for name, tap in taps.items():
        assert tap.dtype == torch.float32 and tap.is_contiguous() and not tap.is_inference()
        assert torch.allclose(tap, expected[name], atol=1e-5)
    # the heads save the taps for backward: inference tensors would raise here
    channels = student.tap_channels, teacher.tap_channels
    objective = DistillationLoss(MTMS_TERMS, THESIS_WEIGHTS, *channels)
    loss, _ = objective(student(x), (x[:, :1] > 0.5).float(), taps)
    loss.backward()
    assert all(p.grad is not None for p in objective.parameters())

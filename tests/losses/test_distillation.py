import pytest
import torch

from kdcore.errors import ConfigError
from kdcore.losses import KD_TERMS, THESIS_WEIGHTS, DistillationLoss, parse_variant
from kdcore.models import build_student, build_teacher


def test_parse_variant():
    assert parse_variant("baseline") == ()
    assert parse_variant("all") == KD_TERMS
    assert parse_variant("pmd+bottleneck") == ("bottleneck", "pmd")
    with pytest.raises(ConfigError, match="unknown KD term 'decoder'"):
        parse_variant("bottleneck+decoder")


def test_baseline_is_the_seg_term_alone():
    loss = DistillationLoss((), THESIS_WEIGHTS)
    assert loss.formula() == "0.4*seg" and not loss.needs_teacher
    assert not list(loss.parameters())


@pytest.mark.parametrize("batch", [2, 5])
def test_all_terms_give_gradients_to_student_and_heads(batch):
    student, teacher = build_student(8), build_teacher(8, 3)
    loss = DistillationLoss(KD_TERMS, THESIS_WEIGHTS, student.tap_channels, teacher.tap_channels)
    x = torch.rand(batch, 3, 32, 32)
    y = (torch.rand(batch, 1, 32, 32) > 0.8).float()
    with torch.no_grad():
        t = teacher(x, with_recon=False)
    total, parts = loss(student(x), y, t)
    total.backward()
    assert set(parts) == {"seg", *KD_TERMS}
    assert all(p.grad is not None for p in loss.parameters())
    assert all(p.grad is not None for p in student.parameters())
    expected = sum(THESIS_WEIGHTS[k] * v for k, v in parts.items())
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)

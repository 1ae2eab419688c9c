import math

import pytest
import torch

from kdcore.losses import ContrastiveTapLoss, info_nce


def reference_info_nce(s, t, tau):
    """InfoNCE written out sample by sample."""
    total = 0.0
    for i in range(len(s)):
        sims = [torch.dot(s[i], t[j]) / (s[i].norm() * t[j].norm()) / tau for j in range(len(t))]
        total += -math.log(math.exp(sims[i]) / sum(math.exp(x) for x in sims))
    return total / len(s)


@pytest.mark.parametrize("batch", [2, 3, 7])
def test_info_nce_matches_a_direct_computation(batch):
    torch.manual_seed(batch)
    s, t = torch.randn(batch, 11, dtype=torch.float64), torch.randn(batch, 11, dtype=torch.float64)
    assert float(info_nce(s, t, 0.4)) == pytest.approx(reference_info_nce(s, t, 0.4), rel=1e-9)


def test_info_nce_is_low_for_matching_pairs_and_needs_two_samples():
    t = torch.eye(4)
    assert float(info_nce(t, t, 0.1)) < 1e-3
    assert float(info_nce(t, t.roll(1, 0), 0.1)) > 5
    with pytest.raises(ValueError, match="at least 2"):
        info_nce(torch.randn(1, 3), torch.randn(1, 3), 0.4)


def test_tap_loss_resizes_teacher_and_trains_its_projection_head():
    loss = ContrastiveTapLoss(teacher_channels=12, student_channels=4, temperature=0.4)
    student = torch.randn(3, 4, 8, 8, requires_grad=True)
    teacher = torch.randn(3, 12, 2, 2)  # coarser grid and more channels than the student
    value = loss(student, teacher)
    value.backward()
    assert loss.head.weight.grad is not None and loss.head.weight.grad.abs().sum() > 0
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_projecting_then_resizing_equals_resizing_then_projecting():
    loss = ContrastiveTapLoss(teacher_channels=6, student_channels=3)
    teacher = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    loss.double()
    up = torch.nn.functional.interpolate(teacher, size=(8, 8), mode="bilinear")
    a = torch.nn.functional.interpolate(loss.head(teacher), size=(8, 8), mode="bilinear")
    assert torch.allclose(a, loss.head(up))


def test_info_nce_gradients_match_normalising_first():
    torch.manual_seed(0)
    s = torch.randn(5, 40, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 40, dtype=torch.float64, requires_grad=True)
    info_nce(s, t, 0.4).backward()
    grads = s.grad.clone(), t.grad.clone()
    s.grad = t.grad = None
    normalised = torch.nn.functional.normalize
    logits = normalised(s, dim=1) @ normalised(t, dim=1).T / 0.4
    torch.nn.functional.cross_entropy(logits, torch.arange(5)).backward()
    assert torch.allclose(grads[0], s.grad) and torch.allclose(grads[1], t.grad)

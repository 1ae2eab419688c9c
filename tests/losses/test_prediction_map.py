import math

import pytest
import torch

from kdcore.losses import PredictionMapLoss, bernoulli_kl_with_logits


def test_zero_when_maps_agree_and_positive_otherwise():
    z = torch.randn(2, 1, 8, 8)
    assert float(bernoulli_kl_with_logits(z, z, 4.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(bernoulli_kl_with_logits(z, -z, 4.0)) > 1e-3


def test_not_identically_zero_for_single_channel_maps():
    # the reference's softmax over one channel gave exactly 0 here
    loss = PredictionMapLoss(4.0)
    torch.manual_seed(0)
    value = loss(torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16))
    assert float(value) > 0


def test_matches_a_hand_computed_value():
    t, s, temp = torch.tensor([2.0]), torch.tensor([-1.0]), 2.0
    p = 1 / (1 + math.exp(-t.item() / temp))
    q = 1 / (1 + math.exp(-s.item() / temp))
    expected = (p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))) * temp**2
    assert float(bernoulli_kl_with_logits(s, t, temp)) == pytest.approx(expected, rel=1e-6)


def test_gradient_flows_to_student_only_when_maps_differ():
    s = torch.zeros(1, 1, 4, 4, requires_grad=True)
    bernoulli_kl_with_logits(s, torch.ones(1, 1, 4, 4), 4.0).backward()
    assert s.grad.abs().sum() > 0

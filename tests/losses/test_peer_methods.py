"""Each peer distillation method has a property it must have."""

import math

import pytest
import torch

from kdcore.losses import (
    AttentionTransferLoss,
    ChannelWiseLoss,
    FeatureMSELoss,
    HintonLoss,
    RegionAffinityLoss,
    attention_map,
    bernoulli_kl_with_logits,
    channel_wise_kl,
    region_affinity,
)


def test_fitnets_regressor_is_trained_and_loss_vanishes_when_it_maps_exactly():
    loss = FeatureMSELoss(teacher_channels=6, student_channels=3)
    student = torch.randn(2, 3, 8, 8)
    value = loss(student, torch.randn(2, 6, 4, 4))
    value.backward()
    assert loss.regressor.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert float(loss(student, loss.regressor(student))) == pytest.approx(0, abs=1e-12)


def test_hinton_has_the_gradient_of_the_prediction_map_kl():
    torch.manual_seed(0)
    t = torch.randn(2, 1, 4, 4)
    s1 = torch.randn(2, 1, 4, 4, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_(True)
    hinton, kl = HintonLoss(4.0)(s1, t), bernoulli_kl_with_logits(s2, t, 4.0)
    hinton.backward()
    kl.backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-7)
    # ... and differs from it by the teacher's entropy, so it is not 0 at agreement
    assert float(HintonLoss(4.0)(t, t)) > 0.1


def test_attention_transfer_ignores_channel_count_and_feature_scale():
    torch.manual_seed(0)
    base = torch.randn(2, 4, 8, 8)
    teacher = torch.cat([base, base], dim=1) * 7.0  # 8 channels, same attention, scaled
    assert float(AttentionTransferLoss()(base, teacher)) == pytest.approx(0, abs=1e-10)
    assert attention_map(base).norm(dim=1).allclose(torch.ones(2))
    assert float(AttentionTransferLoss()(base, torch.randn(2, 8, 8, 8))) > 0


def test_channel_wise_kl_is_shift_invariant_per_channel_and_zero_at_agreement():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5)
    shift = torch.randn(1, 3, 1, 1)
    assert float(channel_wise_kl(x, x + shift, 4.0)) == pytest.approx(0, abs=1e-6)
    assert float(channel_wise_kl(x, torch.randn(2, 3, 5, 5), 4.0)) > 0
    loss = ChannelWiseLoss(teacher_channels=3, student_channels=2)
    loss(torch.randn(2, 2, 5, 5), x).backward()
    assert loss.align.weight.grad.abs().sum() > 0


def test_channel_wise_kl_is_kl_of_teacher_p_from_student_q_times_t_squared():
    # Shu et al. 2021: KL(P || Q) with P the teacher's per-channel distribution over
    # positions and Q the student's. Channel 0: P = (1/2, 1/2), Q = (4/5, 1/5) at T = 2,
    # where the two directions differ; channel 1 agrees (KL 0).
    temp = 2.0
    teacher = torch.tensor([[[[0.0, 0.0]], [[1.0, 3.0]]]])  # (B=1, C=2, H=1, W=2)
    student = torch.tensor([[[[temp * math.log(4), 0.0]], [[1.0, 3.0]]]])
    p, q = (0.5, 0.5), (0.8, 0.2)
    kl_pq = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))  # 0.2231
    kl_qp = sum(b * math.log(b / a) for a, b in zip(p, q, strict=True))  # 0.1927
    value = float(channel_wise_kl(student, teacher, temp))
    assert value == pytest.approx(kl_pq / 2 * temp**2, rel=1e-6)  # mean over 2 channels
    assert value != pytest.approx(kl_qp / 2 * temp**2, rel=1e-2)


def test_region_affinity_uses_the_mask_and_skips_samples_with_one_region():
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, :4] = 1  # sample 0: both regions; sample 1: background only
    feats = torch.randn(2, 4, 8, 8)
    feats[0, :, :4] = torch.tensor([1.0, 0, 0, 0]).view(4, 1, 1)
    feats[0, :, 4:] = torch.tensor([0, 1.0, 0, 0]).view(4, 1, 1)
    assert float(region_affinity(feats, mask)[0]) == pytest.approx(0, abs=1e-6)  # orthogonal
    teacher = torch.randn(2, 16, 4, 4)  # other channels and grid: no projection needed
    value = RegionAffinityLoss()(feats, teacher, mask)
    expected = (region_affinity(teacher, mask[:, :, ::2, ::2])[0]) ** 2
    assert float(value) == pytest.approx(float(expected), rel=1e-5)
    assert float(RegionAffinityLoss()(feats, feats, mask)) == pytest.approx(0, abs=1e-12)

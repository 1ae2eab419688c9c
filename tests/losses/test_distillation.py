import pytest
import torch

from kdcore.errors import ConfigError
from kdcore.losses import MTMS_TERMS, THESIS_WEIGHTS, DistillationLoss, needs_pairs, parse_variant
from kdcore.models import build_student, build_teacher


def test_parse_variant():
    assert parse_variant("baseline") == ("baseline", ())
    assert parse_variant("all") == ("all", MTMS_TERMS)
    assert parse_variant("pmd+bottleneck") == ("pmd+bottleneck", ("pmd", "bottleneck"))
    assert parse_variant("fitnets:mse@enc+pmd") == ("fitnets", ("mse@enc", "pmd"))
    assert parse_variant("mtms:all").terms == MTMS_TERMS
    with pytest.raises(ConfigError, match="unknown KD term 'decoder'"):
        parse_variant("bottleneck+decoder")
    with pytest.raises(ConfigError, match="unknown KD term 'at@middle'"):
        parse_variant("at@middle")
    assert needs_pairs(("enc", "pmd")) and not needs_pairs(("mse@enc", "pmd"))


def test_baseline_is_the_seg_term_alone():
    loss = DistillationLoss((), THESIS_WEIGHTS)
    assert loss.formula() == "0.4*seg" and not loss.needs_teacher
    assert not list(loss.parameters())


def test_missing_weight_is_a_clear_error():
    with pytest.raises(ConfigError, match="no weight for 'at@dec'"):
        DistillationLoss(("at@dec",), THESIS_WEIGHTS)


ALL_TERMS = (*MTMS_TERMS, "hinton", "mse@enc", "at@bottleneck", "cwd@dec", "imd@dec", "rad@enc")
WEIGHTS = {
    **THESIS_WEIGHTS,
    "hinton": 0.2,
    "mse": 0.1,
    "at": 200.0,
    "imd": 200.0,
    "cwd": 1.2,
    "rad": 0.4,
}


@pytest.mark.parametrize("batch", [2, 5])
def test_every_term_gives_gradients_to_student_and_heads(batch):
    student, teacher = build_student(8), build_teacher(8, 3)
    loss = DistillationLoss(ALL_TERMS, WEIGHTS, student.tap_channels, teacher.tap_channels)
    x = torch.rand(batch, 3, 32, 32)
    y = torch.zeros(batch, 1, 32, 32)
    y[:, :, 8:20, 10:24] = 1
    with torch.no_grad():
        t = teacher(x, with_recon=False)
    total, parts = loss(student(x), y, t)
    total.backward()
    assert set(parts) == {"seg", *ALL_TERMS}
    assert all(p.grad is not None for p in loss.parameters())
    assert all(p.grad is not None for p in student.parameters())
    expected = sum(loss.weights[k] * float(v) for k, v in parts.items())
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    assert loss.formula().startswith("0.4*seg + 0.1*enc + 0.2*bottleneck")

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


def test_unknown_names_list_the_registered_methods():
    with pytest.raises(ConfigError) as err:
        parse_variant("distill@enc")
    for name in ("at", "cwd", "imd", "infonce", "mse", "rad", "hinton", "pmd"):
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="'at' needs a scale: at@<scale>"):
        parse_variant("at")


def test_each_term_has_one_spelling():
    assert parse_variant("infonce@enc+pmd@logits+at@dec").terms == ("enc", "pmd", "at@dec")
    assert parse_variant("enc+infonce@enc").terms == ("enc",)


def test_a_new_method_is_one_registered_class_and_its_weight(monkeypatch):
    from torch import nn

    from kdcore.losses import registry

    monkeypatch.setattr(registry, "METHODS", dict(registry.METHODS))
    monkeypatch.setattr("kdcore.losses.distillation.METHODS", registry.METHODS)

    @registry.register_method("l1", registry.FEATURE_SCALES, uses_target=True)
    class L1Loss(nn.Module):
        def forward(self, student, teacher, target):
            return (student.mean() - teacher.mean()).abs() + 0 * target.sum()

    assert parse_variant("l1@dec").terms == ("l1@dec",)
    student, teacher = build_student(4), build_teacher(4, 2)
    loss = DistillationLoss(("l1@dec",), {**THESIS_WEIGHTS, "l1": 0.5})
    x, y = torch.rand(2, 3, 16, 16), torch.zeros(2, 1, 16, 16)
    total, parts = loss(student(x), y, teacher(x, with_recon=False))
    assert set(parts) == {"seg", "l1@dec"} and loss.formula() == "0.4*seg + 0.5*l1@dec"
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_method("l1", registry.FEATURE_SCALES)(L1Loss)


def test_reference_modes_reproduce_the_reference_code():
    """kd.heads=random: a new untrained head every step; kd.pmd_mode=reference: zero."""
    from kdcore.losses import ContrastiveTapLoss, PredictionMapLoss

    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3, 8, 8), torch.randn(4, 6, 4, 4)
    random = ContrastiveTapLoss(6, 3, heads="random")
    assert not any(p.requires_grad for p in random.parameters())
    assert float(random(student, teacher)) != float(random(student, teacher))  # new head
    trained = ContrastiveTapLoss(6, 3)
    assert float(trained(student, teacher)) == float(trained(student, teacher))
    s = torch.randn(2, 1, 8, 8, requires_grad=True)
    zero = PredictionMapLoss(4.0, mode="reference")(s, torch.randn(2, 1, 8, 8))
    zero.backward()
    assert float(zero) == 0.0 and float(s.grad.abs().sum()) == 0.0
    assert float(PredictionMapLoss(4.0)(s, torch.randn(2, 1, 8, 8))) > 0
    with pytest.raises(ValueError, match="heads must be one of trained, random"):
        ContrastiveTapLoss(6, 3, heads="frozen")


def test_the_objective_takes_modes_from_the_kd_settings():
    settings = {
        "temperature": 0.4,
        "pmd_temperature": 4.0,
        "cwd_temperature": 4.0,
        "heads": "random",
        "pmd_mode": "reference",
    }
    loss = DistillationLoss(
        ("enc", "pmd"), THESIS_WEIGHTS, {"enc": 8}, {"enc": 16}, "dice", settings
    )
    assert loss.kd["enc"].heads == "random" and loss.kd["pmd"].mode == "reference"

"""Every shipped profile, data source and ablation composes and passes the config checks."""

import pytest
from hydra import compose, initialize_config_dir

from kdcore.errors import ConfigError
from kdcore.experiment import check_config
from kdcore.models import build_student, build_teacher, count_parameters
from tests.conftest import REPO


def make(*overrides: str):
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
@pytest.mark.parametrize("data", ["phantom", "msd_spleen"])
def test_profiles_compose_and_pass_checks(profile, data):
    cfg = make(f"profile={profile}", f"data={data}", "ablation=scales")
    check_config(cfg)
    assert len(cfg.variants) == 9 and list(cfg.seeds) == [0, 1, 2]


def test_methods_ablation_compares_mtms_with_every_peer():
    cfg = make("ablation=methods")
    check_config(cfg)
    labels = [v.split(":")[0] for v in cfg.variants]
    assert labels == ["baseline", "mtms", "fitnets-mse", "hinton", "cwd", "at", "emkd"]


def test_paper_profile_uses_the_thesis_networks():
    cfg = make("profile=paper")
    assert cfg.image_size == 256 and cfg.student.fit.epochs == 120
    assert cfg.student.fit.batch_size == 20
    teacher = build_teacher(cfg.teacher.width, cfg.teacher.depth)
    assert count_parameters(teacher) == 43_236_036
    assert count_parameters(build_student(cfg.student.width)) == 57_297


@pytest.mark.parametrize(
    "override, message",
    [
        ("variants=[]", "variants is empty"),
        ("variants=[a:enc,a:dec]", "variants lists a value twice"),
        ("seeds=[0,0]", "seeds lists a value twice"),
        ("data_fraction=half", "data_fraction must be in (0, 1]"),
        ("split=random", "unknown split 'random'"),
        ("student.seg_loss=focal", "unknown student.seg_loss 'focal'"),
        ("teacher.fit.optimizer=lion", "unknown optimizer 'lion'"),
        ("image_size=100", "divisible by 2**teacher.depth"),
    ],
)
def test_bad_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("*", r"\*")):
        check_config(make(override))

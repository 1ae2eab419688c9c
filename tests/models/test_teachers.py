"""The teacher and dataset registries: every known name builds, an unknown one is refused
with the list of known names."""

import pytest
from omegaconf import OmegaConf

from kdcore.data.sources import DATASETS, data_source
from kdcore.errors import ConfigError
from kdcore.models import TEACHERS, teacher_name
from kdcore.models.teachers import teacher_arch


def test_an_unknown_teacher_or_dataset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="teacher.arch 't3' .* choose one of t1, t2"):
        teacher_arch(OmegaConf.create({"teacher": {"arch": "t3"}}))
    with pytest.raises(ConfigError, match="choose one of phantom, msd_spleen, msd"):
        data_source(OmegaConf.create({"data": {"name": "brats"}}))
    assert set(TEACHERS) == {"t1", "t2"} and set(DATASETS) == {"phantom", "msd_spleen", "msd"}


def test_teacher_names_come_from_the_registry():
    t1 = OmegaConf.create({"teacher": {"arch": "t1", "width": 64, "depth": 4}})
    assert teacher_name(t1) == "T1"
    t1.teacher.width = 16
    assert teacher_name(t1) == "T1(w16,d4)"
    t2 = {"width": 8, "blocks": [1, 1, 1], "hidden": 128, "layers": 4, "heads": 4, "mlp": 256}
    assert teacher_name(OmegaConf.create({"teacher": {"arch": "t2", "t2": t2}})) == (
        "T2(w8,h128,L4)"
    )

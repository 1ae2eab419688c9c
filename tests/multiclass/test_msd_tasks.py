"""Any MSD task: its dataset.json names the classes and the modalities. Small generated
folders in the layouts of a CT task with two classes (Task03_Liver) and a multi-modal MR
task (Task05_Prostate: T2 and ADC)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from kdcore.data.prepare import prepare_data
from kdcore.errors import ConfigError
from kdcore.models.teachers import network_channels
from kdcore.settings import compose_config
from tests.conftest import TINY_AFFINE, run_cli

LIVER = {"0": "background", "1": "liver", "2": "cancer"}
PROSTATE = {"0": "background", "1": "PZ", "2": "TZ"}


def write_task(
    root: Path,
    labels: dict,
    modalities: dict,
    cases: int = 10,
    seed: int = 0,
    shape=(24, 24, 6),
    label_values=None,
) -> Path:
    """An MSD task folder: organ (1) with a lesion (2) inside, in every case; images of
    one channel per modality (4D when there are several)."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(cases):
        label = np.zeros(shape, np.uint8)
        label[4:16, 5:17, 1:5] = 1
        label[8:12, 9:13, 2:4] = 2
        if label_values is not None:
            label = label_values(i, label)
        channels = [rng.normal(40 + 30 * m, 10, shape) + 60 * label for m in range(len(modalities))]
        image = np.stack(channels, -1) if len(channels) > 1 else channels[0]
        name = f"case_{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.float32), TINY_AFFINE), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label, TINY_AFFINE), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    manifest = {"name": root.name, "labels": labels, "modality": modalities, "training": training}
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def config(tmp_path: Path, root: Path, *overrides: str):
    return compose_config(
        [
            "profile=smoke",
            "data=msd",
            f"data.task={root.name}",
            f"data.root={root.parent}",
            "image_size=16",
            f"work_dir={tmp_path / 'w'}",
            *overrides,
        ]
    )


def test_a_ct_task_reads_its_classes_from_dataset_json(tmp_path):
    root = write_task(tmp_path / "msd" / "Task03_Liver", LIVER, {"0": "CT"})
    cfg = config(tmp_path, root)
    data, _ = prepare_data(cfg, lambda _: None)
    assert data.classes.names == ("liver", "cancer") and data.images.shape[1:] == (16, 16)
    assert set(np.unique(data.masks)) == {0, 1, 2}
    assert network_channels(cfg) == (3, 3)
    merged = config(tmp_path, root, "data.labels={liver: [1, 2]}")
    data, _ = prepare_data(merged, lambda _: None)
    assert data.classes.names == ("liver",) and set(np.unique(data.masks)) == {0, 1}
    assert network_channels(merged) == (3, 1)


def test_a_multi_modal_task_gives_one_input_channel_per_modality(tmp_path):
    root = write_task(tmp_path / "msd" / "Task05_Prostate", PROSTATE, {"0": "T2", "1": "ADC"})
    cfg = config(tmp_path, root)
    data, _ = prepare_data(cfg, lambda _: None)
    assert data.images.shape[1:] == (2, 16, 16)
    assert 0.0 <= float(np.min(data.images)) and float(np.max(data.images)) <= 1.0
    assert network_channels(cfg) == (2, 3)


def test_modalities_that_disagree_with_the_images_are_refused(tmp_path):
    root = write_task(tmp_path / "msd" / "Task05_Prostate", PROSTATE, {"0": "T2", "1": "ADC"})
    manifest = json.loads((root / "dataset.json").read_text())
    manifest["modality"] = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    (root / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"2 modality channel\(s\), but the dataset.json names 4"):
        prepare_data(config(tmp_path, root), lambda _: None)


def test_a_label_value_outside_the_classes_is_refused(tmp_path):
    def stray(i, label):
        if i == 3:
            label[0, 0, 0] = 7
        return label

    root = write_task(tmp_path / "msd" / "Task03_Liver", LIVER, {"0": "CT"}, label_values=stray)
    with pytest.raises(
        ConfigError, match=r"case_03.nii.gz has values \{7\} that belong to no class"
    ):
        prepare_data(config(tmp_path, root), lambda _: None)


def test_a_class_missing_from_the_training_split_is_refused(tmp_path):
    root = write_task(
        tmp_path / "msd" / "Task03_Liver", LIVER, {"0": "CT"}, label_values=lambda i, y: y % 2
    )  # no case keeps its lesion
    with pytest.raises(ConfigError, match=r"class 'cancer': the train split .* has no foreground"):
        prepare_data(config(tmp_path, root), lambda _: None)


def test_a_multi_modal_grid_runs_end_to_end(tmp_path):
    root = write_task(tmp_path / "msd" / "Task05_Prostate", PROSTATE, {"0": "T2", "1": "ADC"})
    proc = run_cli(
        "profile=smoke",
        "data=msd",
        f"data.task={root.name}",
        f"data.root={root.parent}",
        "image_size=16",
        "seeds=[0]",
        "variants=[baseline,all]",
        f"results_dir={tmp_path / 'r'}",
        f"work_dir={tmp_path / 'w'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = (tmp_path / "r" / "grid").iterdir()
    assert "msd-Task05_Prostate-all-labels" in folder.name
    assert set(pd.read_csv(folder / "cases.csv")["class"]) == {"PZ", "TZ"}
    assert "### PZ" in (folder / "table.md").read_text()

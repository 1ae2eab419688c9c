"""Datasets in the Medical Segmentation Decathlon layout.

root/dataset.json            {"training": [{"image": "./imagesTr/x.nii.gz", "label": ...}]}
root/imagesTr/*.nii.gz
root/labelsTr/*.nii.gz
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kdcore.errors import ConfigError

SPLEEN_TASK = "Task09_Spleen"


@dataclass(frozen=True)
class Case:
    """One labelled volume: its name (file stem) and the image and label paths."""

    name: str
    image: Path
    label: Path


def list_cases(root: str | Path) -> list[Case]:
    """The labelled cases of an MSD-layout folder, sorted by name.

    Raises ConfigError naming the problem when the folder, its dataset.json or a listed
    file is missing, or when it lists no training case.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"data folder {root} does not exist")
    manifest = root / "dataset.json"
    if not manifest.is_file():
        raise ConfigError(
            f"{root} has no dataset.json: expected the Medical Segmentation Decathlon layout "
            "(dataset.json, imagesTr/, labelsTr/)"
        )
    try:
        entries = json.loads(manifest.read_text())["training"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{manifest} is not a valid MSD dataset.json ({err})") from None
    cases = []
    for entry in entries:
        image, label = root / entry["image"], root / entry["label"]
        for path in (image, label):
            if not path.is_file():
                raise ConfigError(f"{manifest} lists {path}, which does not exist")
        name = image.name.removesuffix(".gz").removesuffix(".nii")
        cases.append(Case(name, image, label))
    if not cases:
        raise ConfigError(f"{manifest} lists no training cases: the dataset is empty")
    return sorted(cases, key=lambda c: c.name)


def locate_msd_spleen(root: str | Path, download: bool = False) -> Path:
    """Find Task09_Spleen under ``root`` (or ``root`` itself); download it if asked.

    Without the data and without ``download`` this raises a ConfigError saying how to
    get it.
    """
    root = Path(root)
    for candidate in (root, root / SPLEEN_TASK):
        if (candidate / "dataset.json").is_file():
            return candidate
    if download:
        from monai.apps import DecathlonDataset, download_and_extract

        root.mkdir(parents=True, exist_ok=True)
        download_and_extract(
            url=DecathlonDataset.resource[SPLEEN_TASK],
            filepath=root / f"{SPLEEN_TASK}.tar",
            output_dir=root,
            hash_val=DecathlonDataset.md5[SPLEEN_TASK],
        )
        return root / SPLEEN_TASK
    raise ConfigError(
        f"MSD {SPLEEN_TASK} not found under {root}. Download {SPLEEN_TASK}.tar from "
        "http://medicaldecathlon.com and extract it there, point data.root at it "
        "(data.root=/path/to/folder), or add data.download=true on a machine with internet"
    )

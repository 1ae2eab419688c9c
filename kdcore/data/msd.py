"""Datasets in the Medical Segmentation Decathlon layout.

root/dataset.json            {"training": [{"image": "./imagesTr/x.nii.gz", "label": ...}]}
root/imagesTr/*.nii.gz
root/labelsTr/*.nii.gz

A case listed twice is refused (the split could put one patient in train and test): two
entries naming the same image or label file, or images with the same bytes.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from kdcore.errors import ConfigError
from kdcore.io import file_digest

SPLEEN_TASK = "Task09_Spleen"
# The Decathlon's ten tasks (http://medicaldecathlon.com).
TASKS = (
    "Task01_BrainTumour",
    "Task02_Heart",
    "Task03_Liver",
    "Task04_Hippocampus",
    "Task05_Prostate",
    "Task06_Lung",
    "Task07_Pancreas",
    "Task08_HepaticVessel",
    SPLEEN_TASK,
    "Task10_Colon",
)


@dataclass(frozen=True)
class Case:
    """One labelled volume: its name (file stem) and the image and label paths."""

    name: str
    image: Path
    label: Path


def list_cases(root: str | Path) -> list[Case]:
    """The labelled cases of an MSD-layout folder, sorted by name.

    Raises ConfigError naming the problem when the folder, its dataset.json or a listed
    file is missing, when it lists no training case, or when two entries list the same
    image or label file, or images with the same bytes.
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
    except (ValueError, KeyError, TypeError) as err:  # ValueError: bad JSON or encoding
        raise ConfigError(f"{manifest} is not a valid MSD dataset.json ({err})") from None
    if not isinstance(entries, list):
        raise ConfigError(
            f"{manifest}: 'training' must be a list of cases, got a {type(entries).__name__}"
        )
    cases = []
    for i, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("image"), str)
            and isinstance(entry.get("label"), str)
        ):
            raise ConfigError(
                f'{manifest}: training[{i}] must be {{"image": path, "label": path}}, got {entry!r}'
            )
        image, label = root / entry["image"], root / entry["label"]
        for path in (image, label):
            if not path.is_file():
                raise ConfigError(f"{manifest} lists {path}, which does not exist")
        name = image.name.removesuffix(".gz").removesuffix(".nii")
        cases.append(Case(name, image, label))
    if not cases:
        raise ConfigError(f"{manifest} lists no training cases: the dataset is empty")
    # Two patients may have identical masks (both empty, say), never identical images.
    for role in ("image", "label"):
        paths = [getattr(c, role) for c in cases]
        _refuse_duplicates(manifest, [e[role] for e in entries], paths, role, role == "image")
    return sorted(cases, key=lambda c: c.name)


def _refuse_duplicates(
    manifest: Path, listed: list[str], paths: list[Path], role: str, by_content: bool
) -> None:
    """ConfigError naming both entries when two list the same file or, with
    ``by_content``, files with the same bytes (sha256; only files of equal size are
    hashed, so this reads almost nothing of a real dataset)."""
    by_file: dict[Path, int] = {}
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        real = path.resolve()
        if real in by_file:
            _duplicate(manifest, role, listed, by_file[real], i, "the same file")
        by_file[real] = i
        by_size[real.stat().st_size].append(i)
    if not by_content:
        return
    for same_size in (group for group in by_size.values() if len(group) > 1):
        by_digest: dict[str, int] = {}
        for i in same_size:
            first = by_digest.setdefault(file_digest(paths[i]), i)
            if first != i:
                _duplicate(manifest, role, listed, first, i, "files with the same bytes")


def _duplicate(manifest: Path, role: str, listed: list[str], i: int, j: int, what: str):
    raise ConfigError(
        f"{manifest} lists the same {role} twice: training[{i}] ({listed[i]}) and "
        f"training[{j}] ({listed[j]}) are {what}, so one patient would count as two (and "
        "could land in both train and test); remove the duplicate entry from dataset.json"
    )


def locate_msd_task(root: str | Path, task: str = SPLEEN_TASK, download: bool = False) -> Path:
    """Find the MSD ``task`` (e.g. Task03_Liver) under ``root`` (or ``root`` itself);
    download it if asked.

    Without the data and without ``download`` this raises a ConfigError saying how to
    get it; so does a failed download, after removing what it created, and a task name
    that is not one of the Decathlon's ten (``TASKS``) when it must be downloaded.
    """
    root = Path(root)
    for candidate in (root, root / task):
        if (candidate / "dataset.json").is_file():
            return candidate
    if download:
        return download_msd_task(root, task)
    raise ConfigError(
        f"MSD {task} not found under {root}. {_by_hand(root, task)}, point "
        "data.root at it (data.root=/path/to/folder), or add data.download=true on a "
        "machine with internet"
    )


def _by_hand(root: Path, task: str) -> str:
    return (
        f"Download {task}.tar from http://medicaldecathlon.com and extract it under "
        f"{root} (giving {root / task / 'dataset.json'})"
    )


def download_msd_task(root: Path, task: str = SPLEEN_TASK) -> Path:
    """Download and extract the MSD ``task`` into ``root`` (MONAI's
    ``download_and_extract``, md5-checked); returns ``root/<task>``.

    On failure (no network, a bad archive...) whatever the download created is removed
    (``root`` itself if it did not exist) and a ConfigError says why and how to place
    the data by hand.
    """
    from monai.apps import DecathlonDataset, download_and_extract

    if task not in DecathlonDataset.resource:
        raise ConfigError(
            f"data.task={task!r} is not a Medical Segmentation Decathlon task; choose one of "
            f"{', '.join(TASKS)} (or place any MSD-layout folder under data.root)"
        )
    url = DecathlonDataset.resource[task]
    archive, folder = root / f"{task}.tar", root / task
    missing = [p for p in (root, *root.parents) if not p.exists()]
    new = [p for p in (archive, folder) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    try:
        download_and_extract(
            url=url,
            filepath=archive,
            output_dir=root,
            hash_val=DecathlonDataset.md5[task],
            hash_type="md5",
        )
        if not (folder / "dataset.json").is_file():
            raise RuntimeError(f"the archive has no {task}/dataset.json")
    except BaseException as err:
        for path in [missing[-1]] if missing else new:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if not isinstance(err, Exception):
            raise  # an interrupt: cleaned up, and still an interrupt
        raise ConfigError(
            f"downloading MSD {task} from {url} failed: {_one_line(err)}. Place the "
            f"data by hand: {_by_hand(root, task)} on a machine with internet, then run "
            "the same command again"
        ) from None
    return folder


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = lines[0] if lines else type(err).__name__
    return reason if len(reason) <= 200 else reason[:197] + "..."

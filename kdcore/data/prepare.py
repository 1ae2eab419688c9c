"""From a config to the data set's slices and their split (the job's first stage)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from kdcore.data.classes import BINARY, LabelClasses, label_classes
from kdcore.data.msd import list_cases
from kdcore.data.slices import SliceData, SliceSettings, foreground_slices, load_slices
from kdcore.data.sources import data_source
from kdcore.data.splits import Splits, check_classes, check_foreground, make_splits
from kdcore.errors import ConfigError
from kdcore.progress import Log
from kdcore.settings import as_dict


def dataset_manifest(cfg: DictConfig) -> dict:
    """The configured dataset's dataset.json."""
    path = dataset_root(cfg, lambda _: None) / "dataset.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None


def classes_of(cfg: DictConfig, read_manifest: bool = True) -> LabelClasses:
    """The classes the config segments (``label_classes`` of ``cfg.data``); with neither
    ``data.labels`` nor ``data.foreground`` set, those the dataset.json names (read only
    with ``read_manifest``: else the binary task stands in, for checks that run before
    the data exist)."""
    data = as_dict(cfg.data)
    manifest = None
    if data.get("labels") is None and data.get("foreground") is None:
        if not read_manifest:
            return BINARY
        manifest = dataset_manifest(cfg)
    return label_classes(data, manifest)


def modalities_of(cfg: DictConfig, read_manifest: bool = True) -> tuple[str, ...]:
    """The image modalities the dataset.json names (its ``modality`` block, in key
    order), or () for one CT modality (the thesis's case: one grey slice, HU window),
    also when there is no such block or ``read_manifest`` is off."""
    fixed = data_source(cfg).modalities
    if fixed is not None:
        return fixed
    if not read_manifest:
        return ()
    block = dataset_manifest(cfg).get("modality")
    if not isinstance(block, dict) or not block:
        return ()
    try:
        names = tuple(str(block[k]) for k in sorted(block, key=int))
    except ValueError:
        raise ConfigError(
            f'the dataset.json \'modality\' keys must be channel numbers ("0", "1", ...), '
            f"got {sorted(block)}"
        ) from None
    return () if names == ("CT",) else names


def slice_settings(cfg: DictConfig, read_manifest: bool = True) -> SliceSettings:
    """How the config turns volumes into slices (window, size, label values, the
    modalities' normalisation)."""
    classes = classes_of(cfg, read_manifest)
    return SliceSettings(
        tuple(cfg.window),
        cfg.image_size,
        classes.values[0] if classes.binary else (1,),
        classes.background,
        cfg.data.pixel_mm,
        classes,
        modalities_of(cfg, read_manifest),
    )


def dataset_root(cfg: DictConfig, log: Log = print) -> Path:
    """The MSD-layout folder of the configured dataset, generating the phantom if needed."""
    return data_source(cfg).root(cfg, log)


def prepare_data(
    cfg: DictConfig, log: Log = print, subset_seed: int | None = None
) -> tuple[SliceData, Splits]:
    """Slices of the configured dataset (cached) and their train / val / test split; the
    student's subset is drawn with ``subset_seed`` (default: the split's seed).

    ConfigError when no label holds a foreground voxel, or when one part of the split
    (train, the student's subset, val, test) holds none.
    """
    root = dataset_root(cfg, log)
    cases = list_cases(root)
    data = load_slices(cases, slice_settings(cfg), Path(cfg.work_dir) / "cache", log)
    splits = make_splits(
        data.case,
        cfg.split,
        cfg.split_seed,
        cfg.val_fraction,
        cfg.test_fraction,
        cfg.data_fraction,
        subset_seed,
    )
    has_fg = foreground_slices(data)
    if not has_fg.any():
        values = sorted(v for vs in data.classes.values for v in vs)
        raise ConfigError(
            f"no label of {root} has a foreground voxel (label values {values}): every "
            "metric would be undefined; check that the labels hold the organ and that "
            f"data.foreground={values} (or data.labels) lists its values"
        )
    check_foreground(has_fg, splits, data.case, data.case_names)
    check_classes(data.masks, splits, data.classes.names, data.case, data.case_names)
    return data, splits

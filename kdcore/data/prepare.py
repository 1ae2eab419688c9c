"""From a config to the data set's slices and their split (the job's first stage)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kdcore.data.msd import list_cases
from kdcore.data.slices import SliceData, SliceSettings, foreground_slices, load_slices
from kdcore.data.sources import data_source
from kdcore.data.splits import Splits, check_foreground, make_splits
from kdcore.errors import ConfigError
from kdcore.progress import Log


def slice_settings(cfg: DictConfig) -> SliceSettings:
    """How the config turns volumes into slices (window, size, label values)."""
    return SliceSettings(
        tuple(cfg.window),
        cfg.image_size,
        tuple(cfg.data.foreground),
        tuple(cfg.data.background),
        cfg.data.pixel_mm,
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
        raise ConfigError(
            f"no label of {root} has a foreground voxel (label values "
            f"data.foreground={list(cfg.data.foreground)}): every metric would be undefined; "
            "check that the labels hold the organ and that data.foreground lists its values"
        )
    check_foreground(has_fg, splits, data.case, data.case_names)
    return data, splits

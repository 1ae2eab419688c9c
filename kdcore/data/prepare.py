"""From a config to the data set's slices and their split (the job's first stage)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kdcore.config import as_dict, slice_settings, stable_hash
from kdcore.data.msd import list_cases, locate_msd_spleen
from kdcore.data.phantom import write_phantom_dataset
from kdcore.data.slices import SliceData, load_slices
from kdcore.data.splits import Splits, make_splits
from kdcore.io import atomic_dir
from kdcore.progress import Log


def dataset_root(cfg: DictConfig, log: Log = print) -> Path:
    """The MSD-layout folder of the configured dataset, generating the phantom if needed."""
    if cfg.data.name == "msd_spleen":
        return locate_msd_spleen(cfg.data.root, cfg.data.download)
    params = as_dict(cfg.phantom)
    root = Path(cfg.work_dir).absolute() / "data" / f"phantom-{stable_hash(params)}"
    if not (root / "dataset.json").is_file():
        log(f"generating phantom CT: {params['num_patients']} patients -> {root}")
        with atomic_dir(root) as tmp:
            write_phantom_dataset(
                tmp,
                params["num_patients"],
                params["seed"],
                tuple(params["shape"]),
                tuple(params["spacing"]),
            )
    return root


def prepare_data(
    cfg: DictConfig, log: Log = print, subset_seed: int | None = None
) -> tuple[SliceData, Splits]:
    """Slices of the configured dataset (cached) and their train / val / test split; the
    student's subset is drawn with ``subset_seed`` (default: the split's seed)."""
    cases = list_cases(dataset_root(cfg, log))
    data = load_slices(cases, slice_settings(cfg), Path(cfg.work_dir) / "cache")
    splits = make_splits(
        data.case,
        cfg.split,
        cfg.split_seed,
        cfg.val_fraction,
        cfg.test_fraction,
        cfg.data_fraction,
        subset_seed,
    )
    return data, splits

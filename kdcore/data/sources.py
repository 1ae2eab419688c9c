"""The dataset registry: where each ``data.name`` comes from (an MSD-layout folder, the
phantom generated first if needed) and its name in tables. An unknown name is refused
with the list of known ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from kdcore.data.msd import SPLEEN_TASK, locate_msd_task
from kdcore.data.phantom import write_phantom_dataset
from kdcore.data.phantom.appearance import KNOBS, Appearance, resolve_appearance
from kdcore.errors import registry_entry
from kdcore.io import atomic_dir
from kdcore.progress import Log
from kdcore.settings import as_dict, stable_hash


@dataclass(frozen=True)
class DataSource:
    """One dataset: ``root(cfg, log)`` its MSD-layout folder, ``label(cfg)`` its name,
    ``key(cfg)`` what its data depend on beyond their config keys (None: nothing), for
    what is keyed by the data (its folder, a grid's Ray run), and ``modalities`` its image
    modalities where they are fixed (() for one CT channel; None: its dataset.json's
    ``modality`` block says)."""

    root: Callable[[DictConfig, Log], Path]
    label: Callable[[DictConfig], str]
    key: Callable[[DictConfig], Any] = lambda _cfg: None
    modalities: tuple[str, ...] | None = None


def phantom_appearance(params: dict) -> Appearance | None:
    """The ``Appearance`` of the ``phantom`` settings (None: the easy phantom)."""
    return resolve_appearance(params["difficulty"], {k: params.get(k) for k in KNOBS})


def _phantom_key(cfg: DictConfig) -> dict:
    """The phantom's settings and its resolved appearance: a preset's values may change
    while its keys stay null."""
    params = as_dict(cfg.phantom)
    appearance = phantom_appearance(params)
    return {**params, "appearance": asdict(appearance) if appearance else None}


def _phantom_root(cfg: DictConfig, log: Log) -> Path:
    params = as_dict(cfg.phantom)
    root = Path(cfg.work_dir).absolute() / "data" / f"phantom-{stable_hash(_phantom_key(cfg))}"
    if not (root / "dataset.json").is_file():
        log(
            f"generating phantom CT ({params['difficulty']}): {params['num_patients']} "
            f"patients -> {root}"
        )
        with atomic_dir(root) as tmp:
            write_phantom_dataset(
                tmp,
                params["num_patients"],
                params["seed"],
                tuple(params["shape"]),
                tuple(params["spacing"]),
                phantom_appearance(params),
            )
    return root


DATASETS: dict[str, DataSource] = {
    "phantom": DataSource(
        _phantom_root,
        lambda cfg: (
            f"phantom CT, {cfg.phantom.difficulty} ({cfg.phantom.num_patients} patients, "
            f"seed {cfg.phantom.seed})"
        ),
        _phantom_key,
        modalities=(),  # CT: known without generating the data to read its dataset.json
    ),
    "msd_spleen": DataSource(
        lambda cfg, _log: locate_msd_task(cfg.data.root, SPLEEN_TASK, cfg.data.download),
        lambda _cfg: f"MSD {SPLEEN_TASK}",
    ),
    # any Decathlon task (data.task), or any folder in its layout
    "msd": DataSource(
        lambda cfg, _log: locate_msd_task(cfg.data.root, cfg.data.task, cfg.data.download),
        lambda cfg: f"MSD {cfg.data.task}",
    ),
}


def data_source(cfg: DictConfig) -> DataSource:
    """The registry entry of ``data.name``."""
    return registry_entry(DATASETS, "data.name", cfg.data.name, "dataset")

"""Plain helpers over a resolved config: dicts, dotted leaves, hashes, copies with
settings made, the device, absolute folders. Every layer may use them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

MAPPING_LEAVES = (
    "axes",
    "only_in",
    "reference_table",
    "data.labels",
)  # mappings checked as one value
PATH_KEYS = ("results_dir", "work_dir", "data.root")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"  # the checkout's Hydra configs


def as_dict(cfg: DictConfig | dict) -> dict:
    """A plain, resolved dict of a config section."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def leaves(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a config as {dotted key: value}; lists and ``MAPPING_LEAVES`` are
    leaves."""
    out: dict[str, Any] = {}
    for key, value in cfg.items() if isinstance(cfg, dict) else as_dict(cfg).items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and dotted not in MAPPING_LEAVES:
            out.update(leaves(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def stable_hash(obj: Any) -> str:
    """Short hash of a JSON-able object (config sections, index arrays as lists)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def with_settings(cfg: DictConfig, settings: dict[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with the {dotted key: value} ``settings`` made."""
    out = cfg.copy()
    for key, value in settings.items():
        OmegaConf.update(out, key, value, merge=False)
    return out


def absolute_paths(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` whose folders are absolute: Ray Tune runs each trial in a folder
    of its own, where a relative ``work_dir`` would make every trial generate its data
    and caches again, and miss the teachers trained for it."""
    paths = {k: OmegaConf.select(cfg, k) for k in PATH_KEYS}
    return with_settings(cfg, {k: str(Path(v).absolute()) for k, v in paths.items() if v})


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``bench/run.py`` would run with these Hydra ``overrides``, composed from
    the checkout's ``configs/`` without starting a Hydra app (for scripts and tests)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def with_defaults(config: dict[str, Any], defaults: DictConfig) -> DictConfig:
    """``config`` (a table's recorded config) over ``defaults`` (today's composed
    config): a setting added since the table was written takes its default, one since
    removed is kept as recorded."""
    base = defaults.copy()
    OmegaConf.set_struct(base, False)
    return OmegaConf.merge(base, config)

"""Each trial once: finished trials kept by a key of everything that changes their result.

A grid looks every (cell, variant, seed) up before it starts Ray Tune and trains only
the missing ones, so the baseline that five tables share is trained once, and extending
``seeds`` trains only the new seeds. The key (``trial_key``) is a hash of the trial's
resolved config without the settings of place, speed and the grid itself, the data's
own key (a phantom's resolved appearance), the variant's terms (not its label) and the
seed; a baseline's key leaves out the teacher and the KD settings, which it does not
use. Entries are JSON files under ``<ray storage>/trials`` (``kdcore.runtime
.storage_root``: a local folder, a folder every node shares, or s3:// and gs:// URIs).

Runs are deterministic on one machine, not across CPUs: an entry records the machine,
commit and time that made it, and the tables show them.

Equal-tuning samples are kept too (``sample_key``: their validation Dice and settings),
so a tuned grid run in parts, with some variants at a time, trains each sample once.

Every table folder keeps the entries of its trials (``write_entries``, as
``store.jsonl.gz``); ``bench/store.py`` puts them into another store, so that a clone
on another machine, or a later session, reuses them instead of training them again.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from pyarrow import fs as pafs

from kdcore.data.sources import data_source
from kdcore.losses import parse_variant, term_weight
from kdcore.models import teacher_settings
from kdcore.names import OPERATIONAL, drop_neutral
from kdcore.settings import as_dict, stable_hash

# Settings that name or shape a grid, or judge a finished trial, not what a trial does.
GRID_KEYS = (
    "ablation_name",
    "profile_name",
    "variants",
    "seeds",
    "axes",
    "only_in",
    "reference_table",
    "tune",
    "tuning",
    "budget.convergence",
    "thesis_steps",  # (what it changes is in budget.steps)
    "stats",
    "protocol.name",
)
# Operational settings that still change a trial's data (another folder, other scans).
KEEP = ("data.root",)
FOLDER = "trials"


def _drop(settings: dict, dotted: str) -> None:
    section, _, leaf = dotted.rpartition(".")
    node = settings
    for part in section.split(".") if section else []:
        node = node.get(part, {})
    node.pop(leaf, None)


def trial_settings(cfg: DictConfig, variant: str, seed: int) -> dict[str, Any]:
    """What a trial's result depends on (see the module docstring)."""
    settings = as_dict(cfg)
    for key in (*OPERATIONAL, *GRID_KEYS):
        if key not in KEEP:
            _drop(settings, key)
    drop_neutral(settings, cfg)
    terms = list(parse_variant(variant).terms)
    if terms:
        settings["teacher"] = teacher_settings(cfg)
        weights = cfg.kd.weights
        settings["kd"]["weights"] = {
            "seg": weights.seg,
            **{t: term_weight(weights, t) for t in terms},
        }
        settings.get("protocol", {}).pop("baseline_fit", None)
    else:  # a baseline uses neither the teacher nor the KD settings
        settings.pop("teacher", None)
        settings.pop("kd", None)
    return {"settings": settings, "data": data_source(cfg).key(cfg), "terms": terms, "seed": seed}


def trial_key(cfg: DictConfig, variant: str, seed: int) -> str:
    """The store's key of a trial of ``variant`` and ``seed`` under ``cfg`` (its cell's
    config, with any tuned settings made)."""
    return stable_hash(trial_settings(cfg, variant, seed))


def sample_key(cfg: DictConfig, variant: str, seed: int) -> str:
    """The store's key of an equal-tuning sample (``kdcore.tuning``): the same training as
    the trial ``trial_key`` names, kept apart because a sample is judged on validation
    only (its entry has no test metrics)."""
    return f"{trial_key(cfg, variant, seed)}-val"


class TrialStore:
    """Finished trials' rows (with history, per-patient counts and examples) by key."""

    def __init__(self, root: str):
        if "://" in root:
            self.fs, base = pafs.FileSystem.from_uri(root)
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(root).absolute())
        self.base = f"{base.rstrip('/')}/{FOLDER}"

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored row of ``key``, or None. An unreadable entry counts as missing (the
        trial runs again and replaces it)."""
        path = self._path(key)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        try:
            with self.fs.open_input_stream(path) as f:
                return json.loads(f.read().decode())
        except (OSError, ValueError):
            return None

    def put(self, key: str, row: dict[str, Any]) -> None:
        """Store ``row`` under ``key``; a reader sees the old entry or the whole new one
        (locally: written aside and renamed; an object store's writes are whole)."""
        self.fs.create_dir(self.base, recursive=True)
        path = self._path(key)
        text = json.dumps(row).encode()
        if isinstance(self.fs, pafs.LocalFileSystem):
            tmp = f"{path}.{os.getpid()}.tmp"
            with self.fs.open_output_stream(tmp) as f:
                f.write(text)
            os.replace(tmp, path)
            return
        with self.fs.open_output_stream(path) as f:
            f.write(text)


def write_entries(path: str | Path, entries: dict[str, dict[str, Any]]) -> None:
    """Write ``entries`` (store rows by key) as gzipped JSON lines, one ``{"key", "entry"}``
    per line, without students' weights (an exported student is kept beside its table).
    The bytes depend only on the entries (no time in the gzip header)."""
    lines = [
        json.dumps({"key": key, "entry": {k: v for k, v in entry.items() if k != "weights"}})
        for key, entry in sorted(entries.items())
    ]
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(("\n".join(lines) + "\n").encode())


def read_entries(path: str | Path) -> dict[str, dict[str, Any]]:
    """The entries ``write_entries`` wrote to ``path``, by key."""
    with gzip.open(path, "rt") as f:
        return {item["key"]: item["entry"] for item in map(json.loads, f)}


def import_entries(store: TrialStore, entries: dict[str, dict[str, Any]]) -> int:
    """Put into ``store`` each of ``entries`` it does not hold (an entry it holds is kept);
    return how many were added."""
    added = 0
    for key, entry in entries.items():
        if store.get(key) is None:
            store.put(key, entry)
            added += 1
    return added

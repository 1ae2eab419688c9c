"""The files of a table folder, written and read back, and the index of every table.

A table is a folder (named by ``kdcore.names.table_dir``) holding
- ``table.md``: setup, mean ± std per variant, change against the baseline, provenance;
- ``trials.csv``: one row per trial (its axis values, then ``kdcore.rows.TRIAL_COLUMNS``);
- ``cases.csv``: each trial's TP / FP / FN per test patient (for the bootstrap);
- ``history/<variant>-seed<k>.csv``: each trial's per-epoch losses (total and per term),
  validation Dice and seconds (named by ``kdcore.rows.history_name``);
- ``provenance.json``: its settings, command, commit and date, read back by the index;
- ``examples.npz``: the example slices, their truth and each prediction shown in
  ``examples.png`` (``write_examples``), so the figure can be drawn again;
- ``store.jsonl.gz``: its trials' trial-store entries (``kdcore.trial_store
  .write_entries``), which ``bench/store.py`` puts into another machine's store;
- figures (``kdcore.plots``), embedded in ``table.md``.

Needs pandas and numpy only (no torch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdcore.errors import ConfigError
from kdcore.io import atomic_path, write_text_atomic
from kdcore.rows import TRIAL_COLUMNS, one_line

INDEX_NAME = "index.md"
EXAMPLES_NAME = "examples.npz"
COST_NAME = "cost.json"  # the cost card of each network of the table (kdcore.cost)
STORE_NAME = "store.jsonl.gz"  # the trial-store entries of its trials (bench/store.py)
TABLE_FILES = ("table.md", "trials.csv", "cases.csv", "provenance.json")


def write_table(
    folder: Path,
    trials: pd.DataFrame,
    histories: dict[str, list[dict]],
    cases: pd.DataFrame,
    markdown: str,
    provenance: dict[str, Any],
    axes: list[str] = (),
) -> None:
    """Write a table's files (see the module docstring) into ``folder``, which exists: the
    caller builds the folder aside and swaps it in whole (``kdcore.io.replaced_dir``).

    ``histories``: per-epoch rows by file name (``history_name``); ``cases``: per-patient
    test counts of every trial.
    """
    folder = Path(folder)
    columns = [*(a for a in axes if a not in TRIAL_COLUMNS), *TRIAL_COLUMNS]
    (folder / "history").mkdir()
    (folder / "trials.csv").write_text(trials[columns].to_csv(index=False))
    (folder / "table.md").write_text(markdown)
    (folder / "cases.csv").write_text(cases.to_csv(index=False))
    for name, rows in histories.items():
        (folder / "history" / name).write_text(pd.DataFrame(rows).to_csv(index=False))
    (folder / "provenance.json").write_text(json.dumps(provenance, indent=1))


@dataclass
class TableFolder:
    """A table folder read back: its trial data, provenance and the Markdown as written."""

    folder: Path
    trials: pd.DataFrame
    cases: pd.DataFrame
    histories: dict[str, list[dict]]
    provenance: dict[str, Any]
    markdown: str

    @property
    def axes(self) -> list[str]:
        """The grid's axes, in order (as ``provenance.json`` records them)."""
        return list(self.axis_values)

    @property
    def axis_values(self) -> dict[str, list]:
        """The grid's axes with their values (a bundle's as its settings)."""
        return dict(self.provenance.get("axes") or {})


def read_table(folder: str | Path) -> TableFolder:
    """Read a table folder written by ``write_table``; a missing file is a ConfigError."""
    folder = Path(folder)
    missing = [name for name in TABLE_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"{folder} is not a table folder: it lacks {', '.join(missing)} (a table folder "
            "holds the files kdcore.table_folder.write_table writes)"
        )
    histories = {
        path.name: pd.read_csv(path).to_dict("records")
        for path in sorted((folder / "history").glob("*.csv"))
    }
    return TableFolder(
        folder=folder,
        trials=pd.read_csv(folder / "trials.csv"),
        cases=pd.read_csv(folder / "cases.csv"),
        histories=histories,
        provenance=json.loads((folder / "provenance.json").read_text()),
        markdown=(folder / "table.md").read_text(),
    )


def write_examples(
    folder: str | Path,
    images: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    cell: Mapping[str, Any] | None = None,
    titles: Sequence[str] | None = None,
    classes: Sequence[str] = (),
) -> Path:
    """Store what ``examples.png`` shows as ``folder/examples.npz`` (compressed): images
    (K, H, W) floats, truth (K, H, W) and predictions (V, K, H, W) as booleans (as class
    indices with several ``classes``, whose names are kept) with their names in order,
    the grid cell (as JSON) and the row titles. ``read_examples`` reads it."""
    path = Path(folder) / EXAMPLES_NAME
    names = list(predictions)
    kind = np.uint8 if len(classes) > 1 else bool
    arrays = {
        "images": np.asarray(images, dtype=np.float32),
        "truth": np.asarray(truth, dtype=kind),
        "predictions": np.stack([np.asarray(predictions[n], dtype=kind) for n in names])
        if names
        else np.zeros((0, *np.shape(truth)), dtype=kind),
        "names": np.asarray(names, dtype=str),
        "cell": np.asarray(json.dumps(dict(cell or {}))),
    }
    if titles is not None:
        arrays["titles"] = np.asarray(list(titles), dtype=str)
    if len(classes) > 1:
        arrays["classes"] = np.asarray(list(classes), dtype=str)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def read_examples(path: str | Path) -> dict[str, Any]:
    """``examples.npz`` as keyword arguments of ``kdcore.plots.plot_examples``: images,
    truth, predictions (by name, in order), titles (or None), cell and classes."""
    with np.load(path, allow_pickle=False) as data:
        names = [str(n) for n in data["names"]]
        return {
            "images": data["images"],
            "truth": data["truth"],
            "predictions": dict(zip(names, data["predictions"], strict=True)),
            "titles": [str(t) for t in data["titles"]] if "titles" in data else None,
            "cell": json.loads(str(data["cell"])),
            "classes": [str(c) for c in data["classes"]] if "classes" in data else [],
        }


def write_index(results_dir: Path) -> Path:
    """Rewrite ``results_dir/index.md``: every table under it (its folder names its
    ablation and settings), newest first, with its command, commit and date (from each
    table's ``provenance.json``)."""
    results_dir = Path(results_dir)
    rows = []
    for path in sorted(results_dir.glob("*/*/provenance.json")):
        p = json.loads(path.read_text())
        rows.append(
            {
                "table": f"[{path.parent.relative_to(results_dir)}]"
                f"({path.parent.relative_to(results_dir)}/table.md)",
                "trials": p["trials"],
                "command": f"`{one_line(p['command'])}`",
                "commit": p["commit"][:10],
                "written": p["written"],
            }
        )
    rows.sort(key=lambda r: r["written"], reverse=True)
    lines = [
        "# Result tables",
        "",
        "Every table this suite has written here, newest first. Each folder holds the table "
        "(`table.md`), its trials (`trials.csv`), each trial's losses and validation Dice per "
        "validation (`history/`) "
        "and its provenance (`provenance.json`). Written by the suite; do not edit.",
        "",
        pd.DataFrame(rows).to_markdown(index=False) if rows else "(no tables yet)",
        "",
    ]
    index = results_dir / INDEX_NAME
    write_text_atomic(index, "\n".join(lines))
    return index


def read_cards(folder: str | Path) -> list[dict[str, Any]]:
    """The cost cards of a table folder (``COST_NAME``), or [] when it has none."""
    path = Path(folder) / COST_NAME
    return json.loads(path.read_text()) if path.is_file() else []


def write_cards(folder: str | Path, cards: list[dict[str, Any]]) -> None:
    """Write a table folder's cost cards (``COST_NAME``), atomically."""
    write_text_atomic(Path(folder) / COST_NAME, json.dumps(cards, indent=1) + "\n")

"""Comparison tables of a grid, and the index of every table under ``results_dir``.

A table is a folder (named by ``kdcore.names.table_dir``) holding
- ``table.md``: setup, mean ± std per variant, change against the baseline, provenance;
- ``trials.csv``: one row per trial (``TRIAL_COLUMNS``);
- ``history/<variant>-seed<k>.csv``: each trial's per-epoch losses (total and per term),
  validation Dice and seconds;
- ``provenance.json``: its settings, command, commit and date, read back by the index.

This module owns the trial schema and needs only pandas (no torch).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from kdcore.io import replaced_dir, write_text_atomic

METRICS = ("dice", "iou", "recall", "precision", "dice_3d")
# One row per trial, in this column order (``kdcore.trial.run_trial`` makes them).
TRIAL_COLUMNS = (
    "variant",
    "seed",
    "teacher",
    "student",
    "params",
    "data_fraction",
    "split",
    "dice",
    "iou",
    "recall",
    "precision",
    "dice_3d",
    "tp",
    "fp",
    "fn",
    "val_dice",
    "best_epoch",
    "objective",
    "wall_s",
)
INDEX_NAME = "index.md"


def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds per variant (grid order kept), and the change of
    each variant's mean Dice against the baseline, in points and relative %."""
    grouped = trials.groupby("variant", sort=False)
    summary = grouped[[*METRICS, "wall_s"]].agg(["mean", "std"])
    summary.columns = [f"{m}_{s}" for m, s in summary.columns]
    summary.insert(0, "seeds", grouped.size())
    if "baseline" in summary.index:
        base = summary.loc["baseline", "dice_mean"]
        summary["delta_dice_pts"] = 100 * (summary["dice_mean"] - base)
        summary["delta_dice_rel"] = 100 * (summary["dice_mean"] / base - 1)
    return summary


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (metrics as mean ± std)."""
    rows = []
    for variant, r in summary.iterrows():
        row = {"variant": variant, "seeds": int(r["seeds"])}
        row.update({m: _fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in METRICS})
        if "delta_dice_pts" in r:
            row["Δ dice vs baseline"] = (
                "—"
                if variant == "baseline"
                else f"{r['delta_dice_pts']:+.2f} pts ({r['delta_dice_rel']:+.1f}%)"
            )
        row["wall_s"] = f"{r['wall_s_mean']:.0f}"
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


def git_commit(repo: Path | None = None) -> str:
    """HEAD's commit, marked when the work tree has uncommitted changes to tracked files.

    Outside a git checkout (e.g. the upload of ``ray job submit``) the KDBENCH_GIT_COMMIT
    environment variable names it.
    """
    if os.environ.get("KDBENCH_GIT_COMMIT"):
        return f"{os.environ['KDBENCH_GIT_COMMIT']} (from KDBENCH_GIT_COMMIT)"
    repo = repo or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} (with uncommitted changes)" if dirty else commit


def render_report(
    title: str,
    trials: pd.DataFrame,
    teacher: dict[str, Any] | None,
    dataset: str,
    command: str,
    config_yaml: str,
    commit: str,
    written: str,
) -> str:
    """The Markdown report of a grid: setup, summary table, provenance."""
    first = trials.iloc[0]
    lines = [f"# {title}", ""]
    lines.append(f"- Dataset: {dataset}")
    if teacher is not None:
        t = teacher["test"]
        lines.append(
            f"- Teacher: {teacher['name']}, {teacher['params']:,} parameters, trained on all "
            f"training patients; test Dice {t['dice']:.3f}, IoU {t['iou']:.3f}, recall "
            f"{t['recall']:.3f}, precision {t['precision']:.3f}, 3D Dice {t['dice_3d']:.3f} "
            f"(checkpoint of epoch {teacher['best_epoch']}, chosen on validation)"
        )
    unit = "patients" if first["split"] == "patient" else "slices"
    lines.append(
        f"- Student: {first['student']}, {int(first['params']):,} parameters, trained on "
        f"{first['data_fraction']:.0%} of the training {unit}"
    )
    seeds = ", ".join(str(s) for s in sorted(trials["seed"].unique()))
    lines += [
        f"- Seeds: {seeds}. Metrics on the test patients: mean ± sample std over seeds.",
        "- dice / iou / recall / precision: pooled over all test slices (as the thesis); "
        "dice_3d: mean per-volume 3D Dice. Checkpoints chosen on validation Dice.",
        "- Baseline and KD variants share optimiser, schedule, epochs, batches, data and "
        "seed; they differ only in the KD terms.",
        "",
        summary_markdown(summarize(trials)),
        "",
        "Objective per variant: "
        + "; ".join(
            f"{v}: `{o}`"
            for v, o in trials.drop_duplicates("variant")[["variant", "objective"]].itertuples(
                index=False
            )
        ),
        "",
        "## Provenance",
        "",
        f"- Command: `{command}`",
        f"- Git commit: {commit}",
        f"- Written: {written}",
        "- Per-trial rows: `trials.csv`; per-epoch losses of each trial: `history/`",
        "",
        "Resolved config:",
        "",
        "```yaml",
        config_yaml.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def history_name(variant: str, seed: int) -> str:
    """File name of a trial's history, e.g. 'bottleneck+pmd-seed0.csv'."""
    return f"{variant.replace(os.sep, '_')}-seed{seed}.csv"


def write_table(
    folder: Path,
    trials: pd.DataFrame,
    histories: dict[tuple[str, int], list[dict]],
    markdown: str,
    provenance: dict[str, Any],
) -> list[Path]:
    """Write a table folder whole (see the module docstring), replacing an older one only
    once the new one is complete; return the paths of its table and rows."""
    folder = Path(folder)
    with replaced_dir(folder) as tmp:
        (tmp / "history").mkdir()
        (tmp / "table.md").write_text(markdown)
        (tmp / "trials.csv").write_text(trials[list(TRIAL_COLUMNS)].to_csv(index=False))
        for (variant, seed), rows in histories.items():
            path = tmp / "history" / history_name(variant, seed)
            path.write_text(pd.DataFrame(rows).to_csv(index=False))
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=1))
    return [folder / "table.md", folder / "trials.csv"]


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
                "command": f"`{p['command']}`",
                "commit": p["commit"][:10],
                "written": p["written"],
            }
        )
    rows.sort(key=lambda r: r["written"], reverse=True)
    lines = [
        "# Result tables",
        "",
        "Every table this suite has written here, newest first. Each folder holds the table "
        "(`table.md`), its trials (`trials.csv`), each trial's per-epoch losses (`history/`) "
        "and its provenance (`provenance.json`). Written by the suite; do not edit.",
        "",
        pd.DataFrame(rows).to_markdown(index=False) if rows else "(no tables yet)",
        "",
    ]
    index = results_dir / INDEX_NAME
    write_text_atomic(index, "\n".join(lines))
    return index


def utc_now() -> str:
    """The current time as 'YYYY-MM-DD HH:MM:SS UTC' (sorts as text)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

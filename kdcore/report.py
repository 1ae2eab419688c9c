"""Comparison tables of a grid, and the index of every table under ``results_dir``.

A table is a folder (named by ``kdcore.names.table_dir``) holding
- ``table.md``: setup, mean ± std per variant, change against the baseline, provenance;
- ``trials.csv``: one row per trial (its axis values, then ``TRIAL_COLUMNS``);
- ``cases.csv``: each trial's TP / FP / FN per test patient (for the bootstrap);
- ``history/<variant>-seed<k>.csv``: each trial's per-epoch losses (total and per term),
  validation Dice and seconds;
- ``provenance.json``: its settings, command, commit and date, read back by the index;
- figures (``kdcore.plots``), embedded in ``table.md``.

This module owns the trial schema and needs only pandas (no torch).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdcore.io import write_text_atomic
from kdcore.stats import bootstrap_pooled_dice_difference, holm, mean_ci, paired_difference

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
    "wall_s",  # the trial's own time: data_s + models + fit_s + test
    "data_s",
    "fit_s",  # training and validation epochs (each epoch's split: history/)
    "checkpoint_s",  # saving and reporting resumable checkpoints
    "trial_s",  # the trial's time as Ray Tune measured it
    "node",  # the Ray node it ran on (its id's first 8 characters)
)
INDEX_NAME = "index.md"


def summarize(trials: pd.DataFrame, cases: pd.DataFrame, axes: list[str] = ()) -> pd.DataFrame:
    """One row per (axis values..., variant), grid order kept, with:

    - ``seeds``; each metric's mean and 95% t-interval over seeds (``<m>_mean``,
      ``<m>_low``, ``<m>_high``); mean wall time;
    - for a KD row, against the baseline of the same cell and seeds: the paired per-seed
      Dice difference in points with its 95% interval (``delta``, ``delta_low``,
      ``delta_high``), its paired t-test p-value, Holm-adjusted over the table's KD rows
      (``p``, ``p_holm``), how many seeds it won (``wins``); and the 95% interval of the
      pooled-Dice difference from a bootstrap over test patients (``boot_low``,
      ``boot_high``, points); ``verdict``: gain / loss when both intervals exclude zero
      on the same side, else "within noise".
    """
    keys = [*axes, "variant"]
    rows = []
    for key, group in trials.groupby(keys, sort=False):
        values = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row = {**values, "seeds": len(group)}
        for m in METRICS:
            ci = mean_ci(group[m].to_numpy())
            row.update({f"{m}_mean": ci.mean, f"{m}_low": ci.low, f"{m}_high": ci.high})
        row["wall_s"] = group["wall_s"].mean()
        if values["variant"] != "baseline":
            row.update(_against_baseline(trials, cases, values, axes, group))
        rows.append(row)
    summary = pd.DataFrame(rows)
    if "p" in summary:
        summary["p_holm"] = holm(summary["p"].to_numpy())
    return summary


def _in_cell(frame: pd.DataFrame, values: dict[str, Any], axes: list[str]) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for k in axes:
        mask &= frame[k] == values[k]
    return frame[mask]


def _against_baseline(
    trials: pd.DataFrame,
    cases: pd.DataFrame,
    values: dict[str, Any],
    axes: list[str],
    group: pd.DataFrame,
) -> dict[str, Any]:
    """The paired and bootstrap comparisons of one KD row with its cell's baseline."""
    cell = _in_cell(trials, values, axes)
    base = cell[cell["variant"] == "baseline"].set_index("seed")
    seeds = [s for s in group["seed"] if s in base.index]
    if not seeds:
        return {}
    kd = group.set_index("seed").loc[seeds]
    diff = paired_difference(kd["dice"].to_numpy(), base.loc[seeds, "dice"].to_numpy())
    counts = _in_cell(cases, values, axes)

    def stack(variant: str) -> np.ndarray:  # (seeds, patients, 3): tp, fp, fn
        rows = counts[counts["variant"] == variant]
        return np.stack(
            [
                rows[rows["seed"] == s].sort_values("case")[["tp", "fp", "fn"]].to_numpy()
                for s in seeds
            ]
        )

    boot = bootstrap_pooled_dice_difference(stack(values["variant"]), stack("baseline"))
    out = {
        "delta": 100 * diff.mean,
        "delta_low": 100 * diff.low,
        "delta_high": 100 * diff.high,
        "p": diff.p_value,
        "wins": diff.wins,
        "boot_low": 100 * boot.low,
        "boot_high": 100 * boot.high,
    }
    above = out["delta_low"] > 0 and out["boot_low"] > 0
    below = out["delta_high"] < 0 and out["boot_high"] < 0
    out["verdict"] = "gain" if above else "loss" if below else "within noise"
    return out


def _interval(mean: float, low: float, high: float, digits: int = 3, sign: str = "") -> str:
    if pd.isna(low):
        return f"{mean:{sign}.{digits}f}"
    return f"{mean:{sign}.{digits}f} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def summary_markdown(summary: pd.DataFrame, axes: list[str] = ()) -> str:
    """The summary as a Markdown table: metrics as mean [95% CI]; for KD rows the Dice
    difference from the baseline (points) with both intervals, seeds won, Holm p."""
    rows = []
    for _, r in summary.iterrows():
        row = {k: r[k] for k in [*axes, "variant"]}
        row["seeds"] = int(r["seeds"])
        row.update({m: _interval(r[f"{m}_mean"], r[f"{m}_low"], r[f"{m}_high"]) for m in METRICS})
        if "delta" in summary:
            kd = r["variant"] != "baseline" and not pd.isna(r.get("delta"))
            row["Δ dice pts, paired by seed [95% CI]"] = (
                _interval(r["delta"], r["delta_low"], r["delta_high"], 2, "+") if kd else "—"
            )
            row["seeds won"] = f"{int(r['wins'])}/{int(r['seeds'])}" if kd else "—"
            row["Δ pts, patient bootstrap [95% CI]"] = (
                f"[{r['boot_low']:+.2f}, {r['boot_high']:+.2f}]" if kd else "—"
            )
            row["p (Holm)"] = f"{r['p_holm']:.3f}" if kd and not pd.isna(r["p_holm"]) else "—"
            row["verdict"] = r["verdict"] if kd else "—"
        row["wall_s"] = f"{r['wall_s']:.0f}"
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
        # results/ holds outputs (tables, the index), not code
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} (with uncommitted changes)" if dirty else commit


def _teacher_line(meta: dict[str, Any], n_cells: int) -> str:
    """A teacher, its test metrics, and the grid cells it serves unless it serves all."""
    t = meta["test"]
    cells = ""
    if len(meta["cells"]) < n_cells:
        cells = (
            " (for "
            + "; ".join(", ".join(f"{k}={v}" for k, v in c.items()) for c in meta["cells"])
            + ")"
        )
    return (
        f"- Teacher{cells}: {meta['name']}, {meta['params']:,} parameters, trained on all "
        f"training patients; test Dice {t['dice']:.3f}, IoU {t['iou']:.3f}, recall "
        f"{t['recall']:.3f}, precision {t['precision']:.3f}, 3D Dice {t['dice_3d']:.3f} "
        f"(checkpoint of epoch {meta['best_epoch']}, chosen on validation)"
    )


def render_report(
    title: str,
    summary: pd.DataFrame,
    trials: pd.DataFrame,
    cases: pd.DataFrame,
    axes: list[str],
    teachers: list[dict[str, Any]],
    dataset: str,
    replicates: str,
    protocol: str,
    command: str,
    config_yaml: str,
    commit: str,
    written: str,
    reference: dict[str, Any] | None = None,
    figures: list[str] = (),
    sections: list[str] = (),
) -> str:
    """The Markdown report of a grid: setup, statistics used, the summary table (from
    ``summarize``) and its figures (file names beside the report), further ``sections``
    (Markdown lines), published numbers, provenance."""
    first = trials.iloc[0]
    unit = "patients" if first["split"] == "patient" else "slices"
    students = trials.drop_duplicates(["student", "params"])
    student = ", ".join(
        f"{r.student} ({int(r.params):,} parameters)" for r in students.itertuples()
    )
    fraction = (
        "the data fraction of its row"
        if "data_fraction" in axes
        else f"{first['data_fraction']:.0%}"
    )
    seeds = sorted(trials["seed"].unique())
    grid = " x ".join(
        [f"{k} ({', '.join(map(str, trials[k].unique()))})" for k in axes]
        + [f"variant ({trials['variant'].nunique()})", f"seed ({len(seeds)})"]
    )
    n_kd = int(summary["delta"].notna().sum()) if "delta" in summary else 0
    patients = cases.groupby([*axes, "variant", "seed"])["case"].nunique().min()
    lines = [f"# {title}", "", f"- Dataset: {dataset}"]
    n_cells = len(trials.drop_duplicates(axes)) if axes else 1
    lines += [_teacher_line(meta, n_cells) for meta in teachers]
    lines += [
        f"- Student: {student}, trained on {fraction} of the training {unit}",
        f"- Grid: {grid}; rows are the axis values and variants.",
        f"- Seeds: {', '.join(map(str, seeds))}. {replicates}",
        f"- Metrics on {patients} test patients: dice / iou / recall / precision pooled over "
        "all test slices (as the thesis); dice_3d: mean per-volume 3D Dice.",
        "- Each cell: mean over seeds [95% t-interval]. KD rows, against the baseline of the "
        "same cell and seeds: the per-seed paired Dice difference in points [95% "
        "t-interval], the seeds it won, the 95% percentile interval of a paired bootstrap "
        "over the test patients (2,000 resamples), and the paired t-test p-value adjusted "
        f"with Holm's method over the {n_kd} KD rows of this table. The intervals are not "
        "corrected for multiple comparisons. verdict: gain or loss only when both intervals "
        "exclude zero on the same side; otherwise within noise.",
        f"- {protocol}",
        "",
        summary_markdown(summary, axes),
        "",
        *[f"![{Path(name).stem}]({name})\n" for name in figures],
        *sections,
        *_reference_lines(reference),
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
        "- Per-trial rows: `trials.csv`; per-patient test counts: `cases.csv`; per-epoch "
        "losses of each trial: `history/`",
        "",
        "Resolved config:",
        "",
        "```yaml",
        config_yaml.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def time_line(
    trials: pd.DataFrame, histories: dict[str, list[dict]], grid_s: float, slots: int
) -> str:
    """Where a trial's time goes, on average: data, training steps, validation,
    checkpoints, models and test; and what the grid's wall time on ``slots`` parallel
    trials makes of each trial (the rest is Ray's scheduling and idle slots)."""
    steps = np.mean([sum(h["train_s"] for h in rows) for rows in histories.values()])
    parts = {
        "data": trials["data_s"].mean(),
        "training steps": steps,
        "validation": trials["fit_s"].mean() - steps,
        "checkpoints": trials["checkpoint_s"].mean(),
        "models and test": (trials["wall_s"] - trials["data_s"] - trials["fit_s"]).mean(),
    }
    shown = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
    share = grid_s * slots / len(trials)
    return (
        f"- Time per trial (mean seconds): {shown}; as Ray Tune measured it "
        f"{trials['trial_s'].mean():.1f}. The grid took {grid_s:.0f} s for {len(trials)} "
        f"trials, {slots} at a time: {share:.1f} s of a slot per trial."
    )


def _reference_lines(reference: dict[str, Any] | None) -> list[str]:
    """Published numbers shown beside the table (``reference_table``), with their source."""
    if not reference:
        return []
    return [
        "## Published numbers",
        "",
        reference["source"],
        "",
        pd.DataFrame(reference["rows"]).to_markdown(index=False),
        "",
    ]


def history_name(row: dict[str, Any], axes: list[str] = ()) -> str:
    """File name of a trial's history: its axis values, variant and seed, e.g.
    'data_fraction=0.25_bottleneck+pmd-seed0.csv'."""
    cell = "".join(f"{k}={row[k]}_" for k in axes)
    return f"{cell}{row['variant']}-seed{row['seed']}.csv".replace(os.sep, "_")


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

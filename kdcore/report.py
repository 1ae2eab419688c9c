"""Comparison tables of a grid: per-trial CSV and a mean +- std Markdown summary."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from kdcore.experiment import TRIAL_COLUMNS
from kdcore.io import write_text_atomic

METRICS = ("dice", "iou", "recall", "precision", "dice_3d")


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
    stem: str,
    trials: pd.DataFrame,
    teacher: dict[str, Any] | None,
    dataset: str,
    command: str,
    config_yaml: str,
    commit: str,
) -> str:
    """The Markdown report of a grid: setup, summary table, provenance."""
    first = trials.iloc[0]
    lines = [f"# {stem}", ""]
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
        f"- Written: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Per-trial rows: `{stem}.csv`",
        "",
        "Resolved config:",
        "",
        "```yaml",
        config_yaml.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_tables(results_dir: Path, stem: str, trials: pd.DataFrame, markdown: str) -> list[Path]:
    """Write ``stem.csv`` and ``stem.md`` atomically; return their paths."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = results_dir / f"{stem}.csv", results_dir / f"{stem}.md"
    write_text_atomic(csv_path, trials[list(TRIAL_COLUMNS)].to_csv(index=False))
    write_text_atomic(md_path, markdown)
    return [csv_path, md_path]

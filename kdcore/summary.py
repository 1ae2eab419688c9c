"""The statistics of a table: per row (axis values and variant), each metric's mean over
seeds with its interval, and a KD row's comparison with its cell's baseline; and their
Markdown table.

Intervals respect the range of what they bound: a metric's t-interval is clipped to the
metric's range [0, 1] and a Dice difference's to [-100, +100] points; each clip is
recorded (``<metric>_clipped``, ``delta_clipped``) and marked in the table. Needs pandas
and numpy only (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kdcore.rows import BASELINE, METRIC_RANGE, METRICS
from kdcore.stats import (
    bootstrap_pooled_dice_difference,
    holm,
    mean_ci,
    minimum_detectable_effect,
    paired_difference,
    seeds_needed,
)

# A difference of two Dice scores, in points, lies in this range.
DELTA_RANGE = (-100.0, 100.0)
CLIPPED_MARK = "†"
CLIPPED_NOTE = (
    f"{CLIPPED_MARK} The t-interval reached beyond the metric's range and is clipped to "
    "[0, 1] (a Dice difference to [-100, +100] points)."
)


def clip_interval(
    low: float, high: float, bounds: tuple[float, float] = METRIC_RANGE
) -> tuple[float, float, bool]:
    """``[low, high]`` clipped to ``bounds``, and whether clipping changed it. NaN bounds
    (one seed) stay NaN and are not clipped."""
    if pd.isna(low) or pd.isna(high):
        return low, high, False
    clipped_low, clipped_high = max(low, bounds[0]), min(high, bounds[1])
    return clipped_low, clipped_high, bool(clipped_low != low or clipped_high != high)


@dataclass(frozen=True)
class StatsSettings:
    """How a table judges its rows (config ``stats``)."""

    alpha: float = 0.05  # family-wise error rate of the verdicts (Holm over the KD rows)
    power: float = 0.8  # of the minimum detectable effects
    converged_share: float = 0.8  # an arm is converged when this share of its runs is
    collapse: float = 0.5  # a run collapsed: test Dice below this x its cell's baseline mean


def summarize(
    trials: pd.DataFrame,
    cases: pd.DataFrame,
    axes: list[str] = (),
    stats: StatsSettings | None = None,
) -> pd.DataFrame:
    """One row per (axis values..., variant), grid order kept, with:

    - ``seeds``; each metric's mean and 95% t-interval over seeds, clipped to [0, 1]
      (``<m>_mean``, ``<m>_low``, ``<m>_high``, ``<m>_clipped``); mean wall time; how
      training ended: ``steps`` (mean steps run), ``converged`` and ``stopped_early``
      (runs that did), ``collapsed`` (runs whose test Dice fell below ``stats.collapse``
      times the cell's baseline mean; counted, not removed from the intervals);
    - for a KD row, against the baseline of the same cell and seeds: the paired per-seed
      Dice difference in points with its 95% interval, clipped to [-100, 100]
      (``delta``, ``delta_low``, ``delta_high``, ``delta_clipped``), its paired t-test
      p-value, Holm-adjusted over the table's KD rows (``p``, ``p_holm``), how many seeds
      it won (``wins``); the 95% interval of the pooled-Dice difference from a bootstrap
      over test patients (``boot_low``, ``boot_high``, points); the SD of the paired
      differences (``sd``) with the minimum detectable effect at ``stats.power``, before
      and after Holm (``mde``, ``mde_holm``: at alpha / the number of KD rows) and the
      seeds a 1-point effect would need after Holm (``seeds_1pt``); and ``verdict``:
      "budget-limited" when either arm has fewer than ``stats.converged_share`` of its
      runs converged; else gain / loss when the Holm-adjusted p is below ``stats.alpha``;
      else "unstable" when either arm mixes collapsed and working runs (the t-test has
      no power on such a bimodal outcome, so it is not called noise); else "within noise".
    """
    stats = stats or StatsSettings()
    keys = [*axes, "variant"]
    rows = []
    for key, group in trials.groupby(keys, sort=False):
        values = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row = {**values, "seeds": len(group)}
        for m in METRICS:
            ci = mean_ci(group[m].to_numpy())
            low, high, clipped = clip_interval(ci.low, ci.high)
            row.update(
                {f"{m}_mean": ci.mean, f"{m}_low": low, f"{m}_high": high, f"{m}_clipped": clipped}
            )
        row["wall_s"] = group["wall_s"].mean()
        row.update(_ending(trials, group, values, axes, stats))
        if values["variant"] != BASELINE:
            row.update(_against_baseline(trials, cases, values, axes, group))
        rows.append(row)
    summary = pd.DataFrame(rows)
    if "p" in summary:
        kd = summary["variant"] != BASELINE
        summary["p_holm"] = holm(summary["p"].to_numpy())
        strict = stats.alpha / max(1, int(kd.sum()))
        summary["mde"] = [
            minimum_detectable_effect(sd, n, stats.alpha, stats.power)
            for sd, n in zip(summary["sd"], summary["seeds"], strict=True)
        ]
        summary["mde_holm"] = [
            minimum_detectable_effect(sd, n, strict, stats.power)
            for sd, n in zip(summary["sd"], summary["seeds"], strict=True)
        ]
        summary["seeds_1pt"] = [
            seeds_needed(sd, 1.0, strict, stats.power) if ok else None
            for sd, ok in zip(summary["sd"], kd, strict=True)
        ]
        summary["verdict"] = [
            _verdict(r, summary, axes, stats) if k else None
            for (_, r), k in zip(summary.iterrows(), kd, strict=True)
        ]
    return summary


def _ending(
    trials: pd.DataFrame,
    group: pd.DataFrame,
    values: dict[str, Any],
    axes: list[str],
    stats: StatsSettings,
) -> dict[str, Any]:
    """How a row's runs ended: mean steps, and how many converged, stopped early and
    collapsed (tables written before these were recorded have none of them)."""
    out: dict[str, Any] = {}
    if "converged" in group:
        out["steps"] = group["steps"].mean()
        out["converged"] = int(group["converged"].astype(bool).sum())
        out["stopped_early"] = int(group["stopped_early"].astype(bool).sum())
    cell = in_cell(trials, values, axes)
    base = cell.loc[cell["variant"] == BASELINE, "dice"]
    if len(base):
        out["collapsed"] = int((group["dice"] < stats.collapse * base.mean()).sum())
    return out


def _verdict(row: pd.Series, summary: pd.DataFrame, axes: list[str], stats: StatsSettings) -> str:
    """budget-limited, unstable, gain, loss or within noise (see ``summarize``)."""
    if pd.isna(row.get("delta")):
        return "within noise"
    cell = in_cell(summary, row, axes)
    arms = (row, cell[cell["variant"] == BASELINE].iloc[0])
    if "converged" in summary:
        if any(arm["converged"] < stats.converged_share * arm["seeds"] for arm in arms):
            return "budget-limited"
    if row["p_holm"] < stats.alpha:
        return "gain" if row["delta"] > 0 else "loss"
    if "collapsed" in summary and any(0 < arm["collapsed"] < arm["seeds"] for arm in arms):
        return "unstable"
    return "within noise"


def in_cell(frame: pd.DataFrame, values: Any, axes: Sequence[str]) -> pd.DataFrame:
    """The rows of ``frame`` whose axis columns equal ``values`` (a mapping or row)."""
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
    cell = in_cell(trials, values, axes)
    base = cell[cell["variant"] == BASELINE].set_index("seed")
    seeds = [s for s in group["seed"] if s in base.index]
    if not seeds:
        return {}
    kd = group.set_index("seed").loc[seeds]
    diff = paired_difference(kd["dice"].to_numpy(), base.loc[seeds, "dice"].to_numpy())
    counts = in_cell(cases, values, axes)

    classes = "class" in counts and counts["class"].notna().any()

    def stack(variant: str) -> np.ndarray:  # (seeds, patients[, classes], 3): tp, fp, fn
        rows = counts[counts["variant"] == variant]
        if not classes:
            return np.stack(
                [
                    rows[rows["seed"] == s].sort_values("case")[["tp", "fp", "fn"]].to_numpy()
                    for s in seeds
                ]
            )
        tables = [
            rows[rows["seed"] == s].pivot_table(
                index="case", columns="class", values=["tp", "fp", "fn"], aggfunc="sum"
            )
            for s in seeds
        ]  # patients x classes, each sorted by name
        return np.stack(
            [np.stack([t[c].to_numpy() for c in ("tp", "fp", "fn")], axis=-1) for t in tables]
        )

    boot = bootstrap_pooled_dice_difference(stack(values["variant"]), stack(BASELINE))
    low, high, clipped = clip_interval(100 * diff.low, 100 * diff.high, DELTA_RANGE)
    out = {
        "delta": 100 * diff.mean,
        "delta_low": low,
        "delta_high": high,
        "delta_clipped": clipped,
        "p": diff.p_value,
        "wins": diff.wins,
        "boot_low": 100 * boot.low,
        "boot_high": 100 * boot.high,
    }
    out["sd"] = (
        100 * float(np.std(kd["dice"].to_numpy() - base.loc[seeds, "dice"].to_numpy(), ddof=1))
        if len(seeds) > 1
        else float("nan")
    )
    return out


def _interval(
    mean: float, low: float, high: float, digits: int = 3, sign: str = "", clipped: bool = False
) -> str:
    if pd.isna(low):
        return f"{mean:{sign}.{digits}f}"
    mark = CLIPPED_MARK if clipped else ""
    return f"{mean:{sign}.{digits}f} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]{mark}"


def _clipped(row: pd.Series, column: str) -> bool:
    value = row.get(column, False)  # NaN on rows without that interval
    return False if pd.isna(value) else bool(value)


def summary_markdown(
    summary: pd.DataFrame, axes: list[str] = (), published: Sequence[str] | None = None
) -> str:
    """The summary as a Markdown table: metrics as mean [95% CI]; for KD rows the Dice
    difference from the baseline (points) with both intervals, seeds won, Holm p, the
    minimum detectable effect (and after Holm) and the verdict; each row's converged runs
    and, when any collapsed, its collapsed runs; an interval clipped to the metric's range
    ends in † and a note under the table says so.

    ``published``: per summary row, the published row it reproduces (e.g. 'KD(T1,S1):
    0.772') or '': such rows get their variant in bold and a column beside the Dice.
    """
    marked = published is not None and any(published)
    rows = []
    for i, (_, r) in enumerate(summary.iterrows()):
        row = {k: r[k] for k in [*axes, "variant"]}
        if marked and published[i]:
            row["variant"] = f"**{r['variant']}**"
        row["seeds"] = int(r["seeds"])
        for m in METRICS:
            row[m] = _interval(
                r[f"{m}_mean"], r[f"{m}_low"], r[f"{m}_high"], clipped=_clipped(r, f"{m}_clipped")
            )
            if m == "dice" and marked:
                row["published dice (thesis row)"] = published[i] or "—"
        if "delta" in summary:
            kd = r["variant"] != BASELINE and not pd.isna(r.get("delta"))
            clipped = _clipped(r, "delta_clipped")
            row["Δ dice pts, paired by seed [95% CI]"] = (
                _interval(r["delta"], r["delta_low"], r["delta_high"], 2, "+", clipped)
                if kd
                else "—"
            )
            row["seeds won"] = f"{int(r['wins'])}/{int(r['seeds'])}" if kd else "—"
            row["Δ pts, patient bootstrap [95% CI]"] = (
                f"[{r['boot_low']:+.2f}, {r['boot_high']:+.2f}]" if kd else "—"
            )
            row["p (Holm)"] = f"{r['p_holm']:.3f}" if kd and not pd.isna(r["p_holm"]) else "—"
            row["MDE pts (Holm)"] = (
                f"{r['mde']:.2f} ({r['mde_holm']:.2f})" if kd and not pd.isna(r["mde"]) else "—"
            )
            row["verdict"] = r["verdict"] if kd else "—"
        if "converged" in summary:
            row["converged"] = f"{int(r['converged'])}/{int(r['seeds'])}"
        if "collapsed" in summary and summary["collapsed"].fillna(0).any():
            row["collapsed"] = int(r["collapsed"]) if not pd.isna(r.get("collapsed")) else "—"
        if "student_mflops" in summary and not pd.isna(r.get("student_mflops")):
            row["student MFLOPs"] = f"{r['student_mflops']:,.1f}"
            row["student CPU ms"] = f"{r['student_cpu_ms']:.2f}"
        row["wall_s"] = f"{r['wall_s']:.0f}"
        rows.append(row)
    table = pd.DataFrame(rows).to_markdown(index=False)
    flags = [c for c in summary.columns if c.endswith("_clipped")]
    if any(_clipped(r, c) for _, r in summary.iterrows() for c in flags):
        table += "\n\n" + CLIPPED_NOTE
    return table

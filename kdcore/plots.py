"""Figures of a table: Dice per variant, Dice against the data fraction or the student's
size, the decomposition of a KD-minus-baseline difference, and example segmentations.

Each ``plot_*`` function writes one PNG (120 dpi, about 1000 px wide, so it stays readable
scaled to 800 px) into ``folder`` and returns its path; ``figures_for`` writes the ones
that fit a table's axes. Inputs are the frames of ``kdcore.summary``: a summary from
``summarize`` (one row per axis values and variant) and the per-trial rows.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never
through ``pyplot``: nothing changes the caller's backend, and no figure outlives its
function. Needs matplotlib, numpy and pandas only (no torch).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from kdcore.io import atomic_path
from kdcore.rows import METRICS

DPI = 120
WIDTH_IN = 8.5  # inches: about 1000 px at DPI
# The thesis's students (kdcore.models.build_student widths 16 and 32).
THESIS_STUDENTS = {57_297: "S1", 227_233: "S2"}
BASELINE_COLOR = "0.25"
GAIN_COLOR = "#1a9850"
LOSS_COLOR = "#d73027"
NOISE_COLOR = "0.35"
# Columns of a summary that are not axes (see kdcore.summary.summarize).
SUMMARY_COLUMNS = frozenset(
    {"variant", "seeds", "wall_s", "delta", "delta_low", "delta_high", "wins", "p", "p_holm"}
    | {"boot_low", "boot_high", "verdict"}
    | {f"{m}_{s}" for m in METRICS for s in ("mean", "low", "high")}
)
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

BOUNDS = ("mean", "low", "high")
F = TypeVar("F", bound=Callable[..., Any])


def _styled(func: F) -> F:
    """Run a plotting function under this module's rc settings."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, folder: str | Path, name: str) -> Path:
    """Write ``fig`` as ``folder/name`` (atomically) and return the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    return path


def axes_of(summary: pd.DataFrame) -> list[str]:
    """The axis columns of a summary, in order: the columns before ``variant`` (where
    ``summarize`` puts them) that are not its own columns."""
    columns = list(summary.columns)
    before = columns[: columns.index("variant")] if "variant" in columns else columns
    return [c for c in before if c not in SUMMARY_COLUMNS]


def _variants(summary: pd.DataFrame) -> list[str]:
    """Variants in table order, the baseline first if present."""
    order = list(dict.fromkeys(summary["variant"]))
    return sorted(order, key=lambda v: v != "baseline")


def _colors(variants: Sequence[str]) -> dict[str, Any]:
    """A colour per variant: the baseline dark grey, the others from tab10 (no grey)."""
    palette = [c for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 7]
    kd = [v for v in variants if v != "baseline"]
    out: dict[str, Any] = {v: palette[i % len(palette)] for i, v in enumerate(kd)}
    out["baseline"] = BASELINE_COLOR
    return out


def _errors(mean: Any, low: Any, high: Any) -> np.ndarray:
    """(2, n) non-negative error-bar lengths; a NaN bound (one seed) gives no bar."""
    mean, low, high = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (mean, low, high))
    err = np.stack([mean - low, high - mean])
    return np.clip(np.nan_to_num(err, nan=0.0), 0.0, None)


def _band(mean: Any, low: Any, high: Any) -> tuple[np.ndarray, np.ndarray]:
    """Band bounds with NaN bounds (one seed) collapsed onto the mean."""
    mean, low, high = (np.asarray(a, dtype=float) for a in (mean, low, high))
    return np.where(np.isnan(low), mean, low), np.where(np.isnan(high), mean, high)


def _value_label(key: str, value: Any) -> str:
    if key == "data_fraction":
        return f"{float(value):.0%} of patients"
    if key == "student.width":
        return f"student width {value}"
    return f"{key}={value}"


def _cell_label(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(_value_label(k, v) for k, v in zip(keys, values, strict=True))


def _cells(summary: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """The summary split by ``keys`` in table order (one cell when there are none)."""
    if not keys:
        return [((), summary)]
    return [
        (key if isinstance(key, tuple) else (key,), group)
        for key, group in summary.groupby(list(keys), sort=False)
    ]


def _seeds_note(summary: pd.DataFrame, intervals: str) -> str:
    """E.g. '(5 seeds; bands: 95% t-intervals)', or a warning when there is one seed."""
    seeds = sorted({int(s) for s in summary["seeds"].dropna()})
    if seeds == [1]:
        return "(1 seed: no intervals over seeds)"
    count = f"{seeds[0]} seeds" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]} seeds"
    return f"({count}; {intervals})"


# --- Dice by variant ---------------------------------------------------------------------


@_styled
def plot_variants(
    summary: pd.DataFrame, folder: str | Path, axes: Sequence[str] | None = None
) -> Path:
    """``dice_by_variant.png``: per variant, mean Dice and the difference from the baseline.

    Left panel: each variant's mean test Dice with its 95% t-interval over seeds, variants
    in table order, the baseline's interval shaded across the panel. Right panel: each KD
    variant's paired per-seed Dice difference from the baseline (points) with its 95%
    t-interval (thick) and the patient-bootstrap interval (thin, just below), a line at 0,
    and the verdict ("gain" / "loss") and seeds won written beside the row.

    With ``axes`` (default: the summary's axis columns) the table is drawn as one pair of
    panels per cell (axis values), stacked, sharing the Dice scales.
    """
    axes = axes_of(summary) if axes is None else list(axes)
    cells = _cells(summary, axes)
    n_rows = max(len(g) for _, g in cells)
    height = len(cells) * (0.9 + 0.36 * n_rows) + 0.9
    fig = _figure(WIDTH_IN, height)
    grid = fig.subplots(len(cells), 2, squeeze=False, sharex="col")
    for (values, cell), (left, right) in zip(cells, grid, strict=True):
        _variant_panels(cell.reset_index(drop=True), left, right)
        if axes:
            left.set_title(f"{_cell_label(axes, values)}: mean test Dice", loc="left")
    grid[0, 1].set_title("KD − baseline Dice, paired by seed", loc="left")
    if not axes:
        grid[0, 0].set_title("Mean test Dice [95% CI]", loc="left")
    grid[-1, 0].set_xlabel("test Dice (0–1)\npooled over test slices")
    grid[-1, 1].set_xlabel("KD − baseline Dice\n(percentage points)")
    fig.suptitle(f"Test Dice by variant {_seeds_note(summary, 'bars: 95% intervals')}")
    handles = [
        Line2D([], [], color="C0", marker="o", lw=1.5, label="mean, 95% t-interval over seeds"),
        Patch(color=BASELINE_COLOR, alpha=0.15, label="baseline's 95% interval"),
        Line2D([], [], color=NOISE_COLOR, marker="o", lw=2.5, label="Δ paired by seed, 95% CI"),
        Line2D([], [], color=NOISE_COLOR, lw=1, marker="|", label="Δ patient bootstrap, 95%"),
        Line2D([], [], color=GAIN_COLOR, marker="o", ls="", label="gain (both CIs > 0)"),
        Line2D([], [], color=LOSS_COLOR, marker="o", ls="", label="loss (both CIs < 0)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3)
    path = _save(fig, folder, "dice_by_variant.png")
    return path


def _variant_panels(cell: pd.DataFrame, left: Any, right: Any) -> None:
    y = np.arange(len(cell))
    base = cell[cell["variant"] == "baseline"]
    if len(base):
        b = base.iloc[0]
        lo, hi = _band(b["dice_mean"], b["dice_low"], b["dice_high"])
        left.axvspan(float(lo), float(hi), color=BASELINE_COLOR, alpha=0.15, lw=0)
        left.axvline(b["dice_mean"], color=BASELINE_COLOR, lw=0.8, ls="--")
    colors = [BASELINE_COLOR if v == "baseline" else "C0" for v in cell["variant"]]
    for i, r in cell.iterrows():
        left.errorbar(
            r["dice_mean"],
            y[i],
            xerr=_errors(r["dice_mean"], r["dice_low"], r["dice_high"]),
            fmt="o",
            color=colors[i],
            capsize=3,
            lw=1.5,
        )
    left.set_yticks(y, list(cell["variant"]))
    left.set_ylim(len(cell) - 0.5, -0.5)
    left.grid(False, axis="y")

    right.axvline(0, color="0.2", lw=1)
    for i, r in cell.iterrows():
        if r["variant"] == "baseline":
            right.text(0, y[i], " reference", va="center", color="0.4", style="italic")
            continue
        if pd.isna(r.get("delta", np.nan)):
            right.text(0, y[i], " no baseline", va="center", color="0.4", style="italic")
            continue
        verdict = r.get("verdict", "within noise")
        color = {"gain": GAIN_COLOR, "loss": LOSS_COLOR}.get(verdict, NOISE_COLOR)
        right.errorbar(
            r["delta"],
            y[i],
            xerr=_errors(r["delta"], r["delta_low"], r["delta_high"]),
            fmt="o",
            color=color,
            capsize=3,
            lw=2.5,
        )
        if not (pd.isna(r.get("boot_low")) or pd.isna(r.get("boot_high"))):
            right.plot(
                [r["boot_low"], r["boot_high"]],
                [y[i] + 0.25] * 2,
                color=color,
                lw=1,
                marker="|",
                markersize=6,
            )
        note = f"{int(r['wins'])}/{int(r['seeds'])} won" if not pd.isna(r.get("wins")) else ""
        if verdict in ("gain", "loss"):
            note = f"{verdict}, {note}"
        right.text(
            1.01,
            y[i],
            note,
            transform=right.get_yaxis_transform(),
            va="center",
            color=color,
            fontweight="bold" if verdict in ("gain", "loss") else "normal",
            fontsize=9,
        )
    right.set_yticks(y, [""] * len(y))
    right.set_ylim(len(cell) - 0.5, -0.5)
    right.grid(False, axis="y")


# --- Dice against an axis ----------------------------------------------------------------


def _line_panels(
    summary: pd.DataFrame,
    x_key: str,
    axes: Sequence[str],
    x_of: Callable[[pd.Series], np.ndarray],
    decorate: Callable[[Any, np.ndarray], None],
    xlabel: str,
    title: str,
) -> Figure:
    """One panel per combination of the axes other than ``x_key``; in each, mean Dice
    against x with a 95% band, one line per variant."""
    others = [a for a in axes if a != x_key]
    cells = _cells(summary, others)
    ncols = 2 if len(cells) == 4 else min(3, len(cells))
    nrows = math.ceil(len(cells) / ncols)
    width = WIDTH_IN if ncols > 1 else 7.5
    fig = _figure(width, 0.9 + (3.4 if ncols < 3 else 3.0) * nrows)
    panels = fig.subplots(nrows, ncols, squeeze=False, sharey=True, sharex=True).ravel()
    variants = _variants(summary)
    colors = _colors(variants)
    for (values, cell), ax in zip(cells, panels, strict=False):
        for v in variants:
            rows = cell[cell["variant"] == v]
            if rows.empty:
                continue
            x = x_of(rows[x_key])
            order = np.argsort(x)
            x = x[order]
            mean, low, high = (rows[f"dice_{s}"].to_numpy(float)[order] for s in BOUNDS)
            lo, hi = _band(mean, low, high)
            style = {"ls": "--"} if v == "baseline" else {}
            ax.plot(x, mean, marker="o", color=colors[v], lw=1.8, label=v, **style)
            ax.fill_between(x, lo, hi, color=colors[v], alpha=0.15, lw=0)
        ax.set_xscale("log")
        ticks = np.unique(x_of(summary[x_key]))
        decorate(ax, ticks)
        if others:
            ax.set_title(_cell_label(others, values), loc="left")
    for i, ax in enumerate(panels):
        ax.set_visible(i < len(cells))
        # x tick labels under every panel with no panel below it
        ax.tick_params(labelbottom=i + ncols >= len(cells))
    ylabel = "test Dice (0–1), mean over seeds"
    if len(cells) == 1:
        panels[0].set_xlabel(xlabel)
        panels[0].set_ylabel(ylabel)
    else:
        fig.supxlabel(xlabel, fontsize=10)
        fig.supylabel(ylabel, fontsize=10)
    title = f"{title} {_seeds_note(summary, 'bands: 95% t-intervals')}"
    if len(cells) == 1:
        panels[0].set_title(title)
    else:
        fig.suptitle(title)
    handles = [
        Line2D([], [], color=colors[v], marker="o", ls="--" if v == "baseline" else "-", label=v)
        for v in variants
    ]
    handles.append(Patch(color="0.5", alpha=0.25, label="95% interval\nover seeds"))
    where = "outside right upper" if len(cells) == 1 else "outside right center"
    fig.legend(handles=handles, loc=where)
    return fig


def _fixed_ticks(ax: Any, ticks: np.ndarray, labels: Sequence[str]) -> None:
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ticks, labels)
    pad = 1.25
    ax.set_xlim(ticks.min() / pad, ticks.max() * pad)


@_styled
def plot_fractions(
    summary: pd.DataFrame, folder: str | Path, axes: Sequence[str] | None = None
) -> Path:
    """``dice_vs_fraction.png``: mean Dice against the student's share of the training
    patients (%, log scale, ticks at the grid's fractions), one line per variant with its
    95% band; one panel per combination of the other axes' values (``axes``, default: the
    summary's axis columns)."""
    axes = axes_of(summary) if axes is None else list(axes)
    if "data_fraction" not in summary:
        raise ValueError("plot_fractions needs a data_fraction column in the summary")

    def decorate(ax: Any, ticks: np.ndarray) -> None:
        _fixed_ticks(ax, ticks, [f"{t:g}%" for t in ticks])

    fig = _line_panels(
        summary,
        "data_fraction",
        axes,
        lambda s: 100 * s.to_numpy(float),
        decorate,
        "student's share of the training patients (%, log scale)",
        "Test Dice against training data",
    )
    return _save(fig, folder, "dice_vs_fraction.png")


def student_params(trials: pd.DataFrame) -> dict[Any, int]:
    """Student parameter count per ``student.width``, from the per-trial rows."""
    if "student.width" not in trials or "params" not in trials:
        raise ValueError("trials need 'student.width' and 'params' columns")
    return {
        k: int(v) for k, v in trials.groupby("student.width", sort=True)["params"].first().items()
    }


def _thesis_names(trials: pd.DataFrame) -> dict[int, str]:
    """Parameter count -> 'S1' / 'S2' for the thesis's students present in ``trials``."""
    names = {p: n for p, n in THESIS_STUDENTS.items() if p in set(trials["params"])}
    if "student" in trials:
        for r in trials.drop_duplicates("params").itertuples():
            if r.student in ("S1", "S2"):
                names[int(r.params)] = r.student
    return names


@_styled
def plot_students(
    summary: pd.DataFrame,
    trials: pd.DataFrame,
    folder: str | Path,
    axes: Sequence[str] | None = None,
) -> Path:
    """``dice_vs_params.png``: mean Dice against the student's parameter count (log scale;
    ``params`` per ``student.width`` from ``trials``), one line per variant with its 95%
    band; the thesis's S1 (57,297) and S2 (227,233) marked when present. One panel per
    combination of the other axes' values (``axes``, default: the summary's axis columns).
    """
    axes = axes_of(summary) if axes is None else list(axes)
    if "student.width" not in summary:
        raise ValueError("plot_students needs a student.width column in the summary")
    params = student_params(trials)
    missing = set(summary["student.width"]) - set(params)
    if missing:
        raise ValueError(f"no trials give the parameters of student widths {sorted(missing)}")
    names = _thesis_names(trials)
    width_of = {p: w for w, p in params.items()}

    def decorate(ax: Any, ticks: np.ndarray) -> None:
        labels = [f"{_short(t)}\nw{width_of.get(int(t), '?')}" for t in ticks]
        _fixed_ticks(ax, ticks, labels)
        for p, name in names.items():
            if p in ticks:
                ax.axvline(p, color="0.5", lw=0.8, ls=":")
                ax.text(
                    p / 1.03,
                    0.03,
                    f"{name} ({p:,})",
                    transform=ax.get_xaxis_transform(),
                    rotation=90,
                    ha="right",
                    va="bottom",
                    fontsize=8.5,
                    color="0.2",
                    bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "lw": 0},
                )

    fig = _line_panels(
        summary,
        "student.width",
        axes,
        lambda s: np.array([params[w] for w in s], dtype=float),
        decorate,
        "student parameters (log scale; w = width)",
        "Test Dice against student size",
    )
    return _save(fig, folder, "dice_vs_params.png")


def _short(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.0f}k"
    return f"{n:.0f}"


# --- Decomposition -----------------------------------------------------------------------


@_styled
def plot_waterfall(steps: pd.DataFrame, folder: str | Path) -> Path:
    """``decomposition.png``: how the KD-minus-baseline Dice difference moves as each
    departure from the thesis's protocol is fixed.

    ``steps``: columns ``step`` (label), ``delta``, ``delta_low``, ``delta_high`` (points),
    in order; drawn left to right as points with 95% error bars joined by a line, each
    labelled with its value, and a line at 0. A NaN interval draws the point alone.
    """
    missing = {"step", "delta", "delta_low", "delta_high"} - set(steps.columns)
    if missing:
        raise ValueError(f"steps lack columns {sorted(missing)}")
    steps = steps.reset_index(drop=True)
    n = len(steps)
    x = np.arange(n)
    delta = steps["delta"].to_numpy(float)
    fig = _figure(max(6.5, min(WIDTH_IN, 1.3 * n + 2.5)), 4.8)
    ax = fig.subplots()
    ax.axhline(0, color="0.2", lw=1, label="no difference")
    ax.plot(x, delta, color="C0", lw=1, alpha=0.6)
    ax.errorbar(
        x,
        delta,
        yerr=_errors(delta, steps["delta_low"], steps["delta_high"]),
        fmt="o",
        color="C0",
        capsize=4,
        lw=2,
        markersize=7,
        label="KD − baseline, 95% CI",
    )
    for xi, d in zip(x, delta, strict=True):
        if np.isnan(d):
            ax.text(xi, 0, "no value", ha="center", va="bottom", color="0.4", style="italic")
        else:
            ax.annotate(
                f"{d:+.2f}",
                (xi, d),
                xytext=(7, 0),
                textcoords="offset points",
                va="center",
                fontsize=9,
            )
    labels = [textwrap.fill(str(s), 18) for s in steps["step"]]
    ax.set_xticks(x, labels, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_xlim(-0.5, n - 0.5)
    ax.grid(False, axis="x")
    ax.set_xlabel("protocol step (each fixes one more departure from the thesis)")
    ax.set_ylabel("KD − baseline Dice (percentage points)")
    ax.set_title("Decomposition of the KD-minus-baseline Dice difference")
    ax.legend(loc="best")
    return _save(fig, folder, "decomposition.png")


# --- Qualitative examples ----------------------------------------------------------------


def _stack(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name} must be (K, H, W) or (H, W), got shape {a.shape}")
    return a


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    denom = pred.sum() + truth.sum()
    return 1.0 if denom == 0 else float(2 * (pred & truth).sum() / denom)


@_styled
def plot_examples(
    images: Any,
    truth: Any,
    predictions: Mapping[str, Any],
    folder: str | Path,
    titles: Sequence[str] | None = None,
) -> Path:
    """``examples.png``: example slices, one row each; columns: the input, the ground
    truth (filled), then each prediction in ``predictions`` order (filled, with the ground
    truth's outline and the slice's Dice in the corner).

    ``images`` (K, H, W) floats in [0, 1]; ``truth`` and each prediction (K, H, W) binary;
    ``titles``: K row labels (e.g. patient and slice), default "example k".
    """
    images = _stack(images, "images").astype(float)
    truth = _stack(truth, "truth").astype(bool)
    preds = {name: _stack(p, name).astype(bool) for name, p in predictions.items()}
    for name, a in [("truth", truth), *preds.items()]:
        if a.shape != images.shape:
            raise ValueError(f"{name} has shape {a.shape}, images {images.shape}")
    k = len(images)
    titles = [f"example {i + 1}" for i in range(k)] if titles is None else list(titles)
    if len(titles) != k:
        raise ValueError(f"{len(titles)} titles for {k} examples")
    columns = ["input", "ground truth", *preds]
    ncols = len(columns)
    panel = min(2.0, WIDTH_IN / ncols)
    fig = _figure(panel * ncols, panel * k + 0.9)
    grid = fig.subplots(k, ncols, squeeze=False)
    truth_color, pred_color, outline = "#ffd700", "#ff3b3b", "#00e5ff"
    for i in range(k):
        masks = [None, truth[i], *(p[i] for p in preds.values())]
        for j, (ax, mask) in enumerate(zip(grid[i], masks, strict=True)):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if mask is not None:
                color = truth_color if j == 1 else pred_color
                ax.imshow(
                    np.ma.masked_where(~mask, mask.astype(float)),
                    cmap=ListedColormap([color]),
                    vmin=0,
                    vmax=1,
                    alpha=0.5,
                    interpolation="nearest",
                )
            if j >= 2:
                if 0 < truth[i].sum() < truth[i].size:
                    ax.contour(truth[i].astype(float), levels=[0.5], colors=outline, linewidths=1)
                ax.text(
                    0.03,
                    0.04,
                    f"Dice {_dice(mask, truth[i]):.2f}",
                    transform=ax.transAxes,
                    color="white",
                    fontsize=8,
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "lw": 0},
                )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i == 0:  # long variant names break after each '+'
                title = columns[j].replace("+", "+\n") if len(columns[j]) > 11 else columns[j]
                ax.set_title(title, fontsize=8)
        grid[i, 0].set_ylabel(titles[i], fontsize=9)
    fig.suptitle("Example test slices")
    handles = [
        Patch(color=truth_color, alpha=0.6, label="ground truth"),
        Patch(color=pred_color, alpha=0.6, label="prediction"),
        Line2D([], [], color=outline, lw=1.5, label="ground-truth outline"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3)
    return _save(fig, folder, "examples.png")


# --- Per table ---------------------------------------------------------------------------


def figures_for(
    summary: pd.DataFrame, trials: pd.DataFrame, axes: Sequence[str], folder: str | Path
) -> list[Path]:
    """Write the figures that fit a table's axes into ``folder``; return their paths.

    - ``data_fraction`` an axis: ``dice_vs_fraction.png`` (a panel per value of the
      other axes);
    - ``student.width`` an axis: ``dice_vs_params.png`` (likewise), so a table over both
      gets both figures;
    - neither (no axes, or only other axes): ``dice_by_variant.png``, with one pair of
      panels per cell when there are axes;
    - one axis of labelled steps (a bundle axis, e.g. the decomposition of the thesis's
      protocol) and one KD variant: also ``decomposition.png``, its difference per step.
    """
    axes = list(axes)
    paths = []
    kd = [v for v in _variants(summary) if v != "baseline"]
    if len(axes) == 1 and len(kd) == 1 and all(isinstance(v, str) for v in summary[axes[0]]):
        rows = summary[summary["variant"] == kd[0]].rename(columns={axes[0]: "step"})
        paths.append(plot_waterfall(rows[["step", "delta", "delta_low", "delta_high"]], folder))
    if "data_fraction" in axes:
        paths.append(plot_fractions(summary, folder, axes))
    if "student.width" in axes:
        paths.append(plot_students(summary, trials, folder, axes))
    if not paths:
        paths.append(plot_variants(summary, folder, axes))
    return paths

"""Figures of a table: Dice per variant, Dice against the data fraction or the student's
size, the decomposition of a KD-minus-baseline difference, and example segmentations.

Each figure has a ``draw_*`` function that returns the ``matplotlib.figure.Figure`` and a
``plot_*`` function that writes it as one PNG (120 dpi, about 1000 px wide, so it stays
readable scaled to 800 px) into ``folder`` and returns its path; ``figures_for`` writes
the ones that fit a table's axes. ``describe`` says what a drawn figure shows (panels,
titles, tick labels, plotted series with their values, texts), for tests and checks.
Inputs are the frames of ``kdcore.summary``: a summary from ``summarize`` (one row per
axis values and variant, intervals already clipped to [0, 1]) and the per-trial rows.

Figures are drawn on ``Figure`` objects with the Agg canvas, never through ``pyplot``:
nothing changes the caller's backend, and no figure outlives its function. Needs
matplotlib, numpy and pandas only (no torch).
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from kdcore.io import atomic_path
from kdcore.rows import BASELINE, METRIC_RANGE, METRICS, cell_text, history_name
from kdcore.summary import in_cell

DPI = 120
WIDTH_IN = 8.5  # inches: about 1000 px at DPI
# The thesis's students (kdcore.models.build_student widths 16 and 32).
THESIS_STUDENTS = {57_297: "S1", 227_233: "S2"}
BASELINE_COLOR = "0.25"
GAIN_COLOR = "#1a9850"
LOSS_COLOR = "#d73027"
NOISE_COLOR = "0.35"
KD_COLOR = "C0"
# Classes of a multi-class example (tab10 without its grey): class k is CLASS_COLORS[k - 1]
CLASS_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)
# Columns of a summary that are not axes (see kdcore.summary.summarize).
SUMMARY_COLUMNS = frozenset(
    {"variant", "seeds", "wall_s", "delta", "delta_low", "delta_high", "delta_clipped"}
    | {"wins", "p", "p_holm", "boot_low", "boot_high", "verdict", "sd", "mde", "mde_holm"}
    | {"seeds_1pt", "steps", "converged", "stopped_early", "collapsed"}
    | {f"{m}_{s}" for m in METRICS for s in ("mean", "low", "high", "clipped")}
)
INTERVALS = "95% t-intervals, clipped to [0, 1]"
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
    with matplotlib.rc_context(_STYLE), atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    return path


# --- What a figure shows -----------------------------------------------------------------


@dataclass
class Panel:
    """One visible panel (axes) of a drawn figure."""

    title: str  # its titles (left, centre, right), joined by ' | '
    xlabel: str
    ylabel: str
    xticks: list[str]
    yticks: list[str]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    series: dict[str, np.ndarray]  # label -> (n, 2) x, y of each labelled line or error bar
    texts: list[str]
    images: int  # images drawn (example tiles)


@dataclass
class Drawn:
    """What a figure shows: its title, panels in reading order and legend entries."""

    title: str
    panels: list[Panel]
    legend: list[str] = field(default_factory=list)

    def panel(self, title: str) -> Panel:
        """The panel whose title contains ``title`` (the first one)."""
        for p in self.panels:
            if title in p.title:
                return p
        raise KeyError(f"no panel titled {title!r}: {[p.title for p in self.panels]}")


def describe(fig: Figure) -> Drawn:
    """What ``fig`` shows, read from its artists after drawing it (so tick labels are
    final): each visible panel's titles, axis labels, tick labels, limits, labelled series
    (lines and error bars: label -> x, y), texts and images; the suptitle and legends."""
    fig.canvas.draw()
    panels = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        series = {
            line.get_label(): np.asarray(line.get_xydata(), dtype=float)
            for line in ax.get_lines()
            if not line.get_label().startswith("_")
        }
        for c in ax.containers:
            if isinstance(c, ErrorbarContainer) and not str(c.get_label()).startswith("_"):
                series[str(c.get_label())] = np.asarray(c.lines[0].get_xydata(), dtype=float)
        titles = [ax.get_title(loc) for loc in ("left", "center", "right")]
        panels.append(
            Panel(
                title=" | ".join(t for t in titles if t),
                xlabel=ax.get_xlabel(),
                ylabel=ax.get_ylabel(),
                xticks=[t.get_text() for t in ax.get_xticklabels() if t.get_visible()],
                yticks=[t.get_text() for t in ax.get_yticklabels() if t.get_visible()],
                xlim=tuple(ax.get_xlim()),
                ylim=tuple(ax.get_ylim()),
                series=series,
                texts=[t.get_text() for t in ax.texts],
                images=len(ax.images),
            )
        )
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    return Drawn(fig.get_suptitle(), panels, legend)


# --- Shared helpers ----------------------------------------------------------------------


def axes_of(summary: pd.DataFrame) -> list[str]:
    """The axis columns of a summary, in order: the columns before ``variant`` (where
    ``summarize`` puts them) that are not its own columns."""
    columns = list(summary.columns)
    before = columns[: columns.index("variant")] if "variant" in columns else columns
    return [c for c in before if c not in SUMMARY_COLUMNS]


def _variants(summary: pd.DataFrame) -> list[str]:
    """Variants in table order, the baseline first if present."""
    order = list(dict.fromkeys(summary["variant"]))
    return sorted(order, key=lambda v: v != BASELINE)


def _colors(variants: Sequence[str]) -> dict[str, Any]:
    """A colour per variant: the baseline dark grey, the others from tab10 (no grey)."""
    palette = [c for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 7]
    kd = [v for v in variants if v != BASELINE]
    out: dict[str, Any] = {v: palette[i % len(palette)] for i, v in enumerate(kd)}
    out[BASELINE] = BASELINE_COLOR
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


def _metric_limits(values: Sequence[Any], pad: float = 0.05) -> tuple[float, float]:
    """Axis limits around ``values`` (a metric's means and interval bounds), padded by a
    share of their range and kept inside the metric's range [0, 1]."""
    v = np.asarray([x for x in np.ravel(values) if not pd.isna(x)], dtype=float)
    lo, hi = (float(v.min()), float(v.max())) if v.size else METRIC_RANGE
    margin = max(hi - lo, 0.02) * pad
    return max(lo - margin, METRIC_RANGE[0]), min(hi + margin, METRIC_RANGE[1])


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
def draw_variants(summary: pd.DataFrame, axes: Sequence[str] | None = None) -> Figure:
    """Per variant, mean Dice and the difference from the baseline.

    Left panel: each variant's mean test Dice with its 95% t-interval over seeds (series
    named by the variant), variants in table order, the baseline's interval shaded across
    the panel, the Dice axis inside [0, 1]. Right panel: each KD variant's paired per-seed
    Dice difference from the baseline (points; series 'Δ <variant>') with its 95%
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
    grid[0, 0].set_xlim(*_metric_limits(summary[["dice_mean", "dice_low", "dice_high"]].to_numpy()))
    grid[0, 1].set_title("KD − baseline Dice, paired by seed", loc="left")
    if not axes:
        grid[0, 0].set_title("Mean test Dice [95% CI]", loc="left")
    grid[-1, 0].set_xlabel("test Dice (0–1)\npooled over test slices")
    grid[-1, 1].set_xlabel("KD − baseline Dice\n(percentage points)")
    fig.suptitle(f"Test Dice by variant {_seeds_note(summary, 'bars: ' + INTERVALS)}")
    handles = [
        Line2D([], [], color=KD_COLOR, marker="o", lw=1.5, label="mean, 95% t-interval"),
        Patch(color=BASELINE_COLOR, alpha=0.15, label="baseline's 95% interval"),
        Line2D([], [], color=NOISE_COLOR, marker="o", lw=2.5, label="Δ paired by seed, 95% CI"),
        Line2D([], [], color=NOISE_COLOR, lw=1, marker="|", label="Δ patient bootstrap, 95%"),
        Line2D([], [], color=GAIN_COLOR, marker="o", ls="", label="gain (Holm p < 0.05)"),
        Line2D([], [], color=LOSS_COLOR, marker="o", ls="", label="loss (Holm p < 0.05)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3)
    return fig


def plot_variants(
    summary: pd.DataFrame, folder: str | Path, axes: Sequence[str] | None = None
) -> Path:
    """``dice_by_variant.png``: ``draw_variants`` written into ``folder``."""
    return _save(draw_variants(summary, axes), folder, "dice_by_variant.png")


def _variant_panels(cell: pd.DataFrame, left: Any, right: Any) -> None:
    y = np.arange(len(cell))
    base = cell[cell["variant"] == BASELINE]
    if len(base):
        b = base.iloc[0]
        lo, hi = _band(b["dice_mean"], b["dice_low"], b["dice_high"])
        left.axvspan(float(lo), float(hi), color=BASELINE_COLOR, alpha=0.15, lw=0)
        left.axvline(b["dice_mean"], color=BASELINE_COLOR, lw=0.8, ls="--")
    for i, r in cell.iterrows():
        left.errorbar(
            r["dice_mean"],
            y[i],
            xerr=_errors(r["dice_mean"], r["dice_low"], r["dice_high"]),
            fmt="o",
            color=BASELINE_COLOR if r["variant"] == BASELINE else KD_COLOR,
            capsize=3,
            lw=1.5,
            label=r["variant"],
        )
    left.set_yticks(y, list(cell["variant"]))
    left.set_ylim(len(cell) - 0.5, -0.5)
    left.grid(False, axis="y")

    right.axvline(0, color="0.2", lw=1)
    for i, r in cell.iterrows():
        if r["variant"] == BASELINE:
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
            label=f"Δ {r['variant']}",
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
        if verdict != "within noise":  # every other verdict is written beside the row
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
    against x with a 95% band, one line per variant (series named by the variant); the
    Dice axis inside [0, 1]."""
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
            style = {"ls": "--"} if v == BASELINE else {}
            if len(x) == 1:  # a band over one point is invisible: error bars, side by side
                x = x * (1 + 0.04 * (variants.index(v) - (len(variants) - 1) / 2))
                bar = [mean - lo, hi - mean]
                ax.errorbar(x, mean, yerr=bar, marker="o", color=colors[v], capsize=4, label=v)
                continue
            # markers at the edge of [0, 1] stay whole
            ax.plot(x, mean, marker="o", color=colors[v], lw=1.8, label=v, clip_on=False, **style)
            ax.fill_between(x, lo, hi, color=colors[v], alpha=0.15, lw=0)
        ax.set_xscale("log")
        ticks = np.unique(x_of(summary[x_key]))
        decorate(ax, ticks)
        if others:
            ax.set_title(_cell_label(others, values), loc="left")
    panels[0].set_ylim(*_metric_limits(summary[["dice_mean", "dice_low", "dice_high"]]))
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
    bars = summary[x_key].nunique() == 1  # one x value: error bars, not bands
    fig.suptitle(f"{title} {_seeds_note(summary, ('bars: ' if bars else 'bands: ') + INTERVALS)}")
    handles = [
        Line2D([], [], color=colors[v], marker="o", ls="--" if v == BASELINE else "-", label=v)
        for v in variants
    ]
    if not bars:  # error bars need no legend entry of their own
        handles.append(
            Patch(color="0.5", alpha=0.25, label="95% interval\nover seeds,\nclipped to [0, 1]")
        )
    fig.legend(handles=handles, loc="outside right center")
    return fig


def _fixed_ticks(ax: Any, ticks: np.ndarray, labels: Sequence[str]) -> None:
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ticks, labels)
    pad = 1.25
    ax.set_xlim(ticks.min() / pad, ticks.max() * pad)


def _against_axis(
    summary: pd.DataFrame,
    axes: Sequence[str] | None,
    x_key: str,
    x_of: Callable[[pd.Series], np.ndarray],
    tick: Callable[[float], str],
    xlabel: str,
    title: str,
) -> Figure:
    """``_line_panels`` over the axis ``x_key`` (log scale, ticks at the grid's values
    written by ``tick``); ``axes`` default to the summary's axis columns."""
    axes = axes_of(summary) if axes is None else list(axes)
    if x_key not in summary:
        raise ValueError(f"this figure needs a {x_key} column in the summary")

    def decorate(ax: Any, ticks: np.ndarray) -> None:
        _fixed_ticks(ax, ticks, [tick(t) for t in ticks])

    return _line_panels(summary, x_key, axes, x_of, decorate, xlabel, title)


@_styled
def draw_fractions(summary: pd.DataFrame, axes: Sequence[str] | None = None) -> Figure:
    """Mean Dice against the student's share of the training patients (%, log scale,
    ticks at the grid's fractions), one line per variant with its 95% band; one panel per
    combination of the other axes' values (``axes``, default: the summary's axis columns)."""
    return _against_axis(
        summary,
        axes,
        "data_fraction",
        lambda s: 100 * s.to_numpy(float),
        lambda t: f"{t:g}%",
        "student's share of the training patients (%, log scale)",
        "Test Dice against training data",
    )


def plot_fractions(
    summary: pd.DataFrame, folder: str | Path, axes: Sequence[str] | None = None
) -> Path:
    """``dice_vs_fraction.png``: ``draw_fractions`` written into ``folder``."""
    return _save(draw_fractions(summary, axes), folder, "dice_vs_fraction.png")


@_styled
def draw_budget(summary: pd.DataFrame, axes: Sequence[str] | None = None) -> Figure:
    """Mean Dice against the budget of optimiser steps (log scale, ticks at the grid's
    budgets), one line per variant with its 95% band; one panel per combination of the
    other axes' values: whether distillation is a head start (the lines meet as the
    budget grows) or a better student (they stay apart)."""
    return _against_axis(
        summary,
        axes,
        "budget.steps",
        lambda s: s.to_numpy(float),
        lambda t: f"{t:,.0f}",
        "optimiser steps per run (log scale)",
        "Test Dice against the training budget",
    )


def plot_budget(
    summary: pd.DataFrame, folder: str | Path, axes: Sequence[str] | None = None
) -> Path:
    """``dice_vs_budget.png``: ``draw_budget`` written into ``folder``."""
    return _save(draw_budget(summary, axes), folder, "dice_vs_budget.png")


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
def draw_students(
    summary: pd.DataFrame, trials: pd.DataFrame, axes: Sequence[str] | None = None
) -> Figure:
    """Mean Dice against the student's parameter count (log scale; ``params`` per
    ``student.width`` from ``trials``), one line per variant with its 95% band; each tick
    names the parameters, the width and, for the thesis's S1 (57,297) and S2 (227,233),
    the student, so no label sits on the data. One panel per combination of the other
    axes' values (``axes``, default: the summary's axis columns)."""
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
        labels = []
        for t in ticks:
            name = names.get(int(t))
            labels.append(
                f"{_short(t)}\nw{width_of.get(int(t), '?')}" + (f"\n{name}" if name else "")
            )
            if name:
                ax.axvline(t, color="0.6", lw=0.8, ls=":", zorder=0)
        _fixed_ticks(ax, ticks, labels)

    return _line_panels(
        summary,
        "student.width",
        axes,
        lambda s: np.array([params[w] for w in s], dtype=float),
        decorate,
        "student parameters (log scale; w = width; S1, S2: the thesis's students)",
        "Test Dice against student size",
    )


def plot_students(
    summary: pd.DataFrame,
    trials: pd.DataFrame,
    folder: str | Path,
    axes: Sequence[str] | None = None,
) -> Path:
    """``dice_vs_params.png``: ``draw_students`` written into ``folder``."""
    return _save(draw_students(summary, trials, axes), folder, "dice_vs_params.png")


def _short(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.0f}k"
    return f"{n:.0f}"


# --- Decomposition -----------------------------------------------------------------------

STEP_COLUMNS = ("step", "delta", "delta_low", "delta_high")
LEVEL_COLUMNS = tuple(f"{w}_{b}" for w in ("baseline", "kd") for b in ("dice", "low", "high"))


@_styled
def draw_waterfall(steps: pd.DataFrame, variant: str = "KD") -> Figure:
    """How the baseline's and KD's Dice, and their difference, move as each departure
    from the thesis's protocol is fixed.

    ``steps``: in order, columns ``step`` (label); ``baseline_dice``, ``kd_dice`` with
    their 95% intervals (``*_low``, ``*_high``); ``delta``, ``delta_low``,
    ``delta_high`` (points). Top panel: the baseline's and ``variant``'s mean test Dice
    per step with their intervals, each labelled with its value (series 'baseline' and
    ``variant``). Bottom panel: the difference with its 95% error bar, labelled, joined
    by a line, and a line at 0 (series 'KD − baseline'). A NaN draws the point alone.
    """
    missing = set(STEP_COLUMNS + LEVEL_COLUMNS) - set(steps.columns)
    if missing:
        raise ValueError(f"steps lack columns {sorted(missing)}")
    steps = steps.reset_index(drop=True)
    n = len(steps)
    x = np.arange(n)
    fig = _figure(max(6.5, min(WIDTH_IN, 1.3 * n + 2.5)), 7.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1])
    shift = 0.12  # the two levels side by side at each step
    for who, name, color, dx, side in (
        ("baseline", "baseline", BASELINE_COLOR, -shift, "left"),
        ("kd", variant, KD_COLOR, shift, "right"),
    ):
        level = steps[f"{who}_dice"].to_numpy(float)
        top.errorbar(
            x + dx,
            level,
            yerr=_errors(level, steps[f"{who}_low"], steps[f"{who}_high"]),
            fmt="o" if who == "kd" else "s",
            color=color,
            capsize=3,
            lw=1.5,
            label=name,
            clip_on=False,
        )
        for xi, v in zip(x + dx, level, strict=True):
            if not np.isnan(v):
                top.annotate(
                    f"{v:.3f}",
                    (xi, v),
                    xytext=(-6 if side == "left" else 6, 0),
                    textcoords="offset points",
                    ha="right" if side == "left" else "left",
                    va="center",
                    fontsize=8.5,
                    color=color,
                )
    levels = steps[list(LEVEL_COLUMNS)].to_numpy(float)
    top.set_ylim(*_metric_limits(levels, pad=0.08))
    top.set_ylabel("test Dice (0–1)\nmean over seeds")
    top.set_title(f"Test Dice of the baseline and of {variant} at each step", loc="left")
    top.legend(loc="best")
    top.grid(False, axis="x")

    delta = steps["delta"].to_numpy(float)
    bottom.axhline(0, color="0.2", lw=1)
    bottom.plot(x, delta, color=KD_COLOR, lw=1, alpha=0.6)
    bottom.errorbar(
        x,
        delta,
        yerr=_errors(delta, steps["delta_low"], steps["delta_high"]),
        fmt="o",
        color=KD_COLOR,
        capsize=4,
        lw=2,
        markersize=7,
        label="KD − baseline",
    )
    for xi, d in zip(x, delta, strict=True):
        if np.isnan(d):
            bottom.text(xi, 0, "no value", ha="center", va="bottom", color="0.4", style="italic")
        else:
            bottom.annotate(
                f"{d:+.2f}",
                (xi, d),
                xytext=(7, 0),
                textcoords="offset points",
                va="center",
                fontsize=9,
            )
    labels = [textwrap.fill(str(s), 18) for s in steps["step"]]
    bottom.set_xticks(x, labels, rotation=30, ha="right", rotation_mode="anchor")
    bottom.set_xlim(-0.5, n - 0.5)
    bottom.grid(False, axis="x")
    bottom.set_xlabel("protocol step (each fixes one more departure from the thesis)")
    bottom.set_ylabel("KD − baseline Dice\n(percentage points)")
    bottom.set_title("Their difference, paired by seed [95% t-interval]", loc="left")
    fig.suptitle("Decomposition of the KD-minus-baseline Dice difference")
    return fig


def plot_waterfall(steps: pd.DataFrame, folder: str | Path, variant: str = "KD") -> Path:
    """``decomposition.png``: ``draw_waterfall`` written into ``folder``."""
    return _save(draw_waterfall(steps, variant), folder, "decomposition.png")


def decomposition_steps(summary: pd.DataFrame, step_key: str, variant: str) -> pd.DataFrame:
    """The columns ``draw_waterfall`` needs, from a summary over one axis of steps: per
    step, the baseline's and ``variant``'s Dice with intervals and their difference."""

    def rows(v: str, prefix: str) -> pd.DataFrame:
        part = summary[summary["variant"] == v].set_index(step_key)
        return part[["dice_mean", "dice_low", "dice_high"]].set_axis(
            [f"{prefix}_dice", f"{prefix}_low", f"{prefix}_high"], axis=1
        )

    kd = summary[summary["variant"] == variant].set_index(step_key)
    steps = kd[["delta", "delta_low", "delta_high"]].join(rows(variant, "kd"))
    steps = steps.join(rows(BASELINE, "baseline"))
    return steps.rename_axis("step").reset_index()


# --- Qualitative examples ----------------------------------------------------------------

EXAMPLE_TILE_IN = (0.8, 1.6)  # a tile's smallest and largest side (inches)
LABEL_PT = 8  # font size of the column titles, row labels and Dice under each tile


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


def _class_dice(pred: np.ndarray, truth: np.ndarray, count: int) -> float:
    """Mean Dice over the classes 1..count in either class map (1.0 when none is)."""
    scores = [
        _dice(pred == k, truth == k)
        for k in range(1, count + 1)
        if (pred == k).any() or (truth == k).any()
    ]
    return float(np.mean(scores)) if scores else 1.0


def _wrap(text: str, width: int) -> str:
    """``text`` on lines of at most ``width`` characters, broken after a '+', '-' (variant
    names) or a space where it can be, mid-word only where a word is longer."""
    words = [w for w in re.split(r"(?<=[+\- ])", text) if w]
    lines: list[str] = []
    for word in words:
        while len(word) > width:  # a word longer than a line: cut it
            if lines and len(lines[-1]) < width:
                room = width - len(lines[-1])
                lines[-1] += word[:room]
                word = word[room:]
            else:
                lines.append(word[:width])
                word = word[width:]
        if lines and len(lines[-1]) + len(word) <= width:
            lines[-1] += word
        elif word:
            lines.append(word)
    return "\n".join(line.strip() for line in lines)


def _chars(inches: float, points: float) -> int:
    """About how many characters of a ``points`` font fit in ``inches``."""
    return max(4, int(inches * 72 / (0.62 * points)))


@_styled
def draw_examples(
    images: Any,
    truth: Any,
    predictions: Mapping[str, Any],
    titles: Sequence[str] | None = None,
    cell: Mapping[str, Any] | None = None,
    classes: Sequence[str] = (),
) -> Figure:
    """Example slices, one row each; columns: the input, the ground truth (filled), then
    each prediction in ``predictions`` order (filled, with the ground truth's outline, its
    Dice on the slice written under the tile).

    ``images`` (K, H, W) floats in [0, 1]; ``truth`` and each prediction (K, H, W) binary,
    or, with several ``classes`` (names of classes 1, 2, ...), class maps: each class
    filled in its own colour, the Dice the mean over the classes on the slice;
    ``titles``: K row labels (e.g. patient and slice), default "example k"; ``cell``: the
    grid cell the examples come from (its axis values), named in the figure's title.
    Column titles, row labels and Dice texts are wrapped and sized to their tile at any
    number of columns: a tile is never narrower than 0.8 inch, the figure grows instead.
    """
    images = _stack(images, "images").astype(float)
    several = len(classes) > 1
    kind = np.uint8 if several else bool
    truth = _stack(truth, "truth").astype(kind)
    preds = {name: _stack(p, name).astype(kind) for name, p in predictions.items()}
    palette = [CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(len(classes))]
    for name, a in [("truth", truth), *preds.items()]:
        if a.shape != images.shape:
            raise ValueError(f"{name} has shape {a.shape}, images {images.shape}")
    k = len(images)
    titles = [f"example {i + 1}" for i in range(k)] if titles is None else list(titles)
    if len(titles) != k:
        raise ValueError(f"{len(titles)} titles for {k} examples")
    columns = ["input", "ground truth", *preds]
    ncols = len(columns)
    tile = float(np.clip((WIDTH_IN - 1.0) / ncols, *EXAMPLE_TILE_IN))
    per_line = _chars(tile, LABEL_PT)
    headers = [_wrap(c, per_line) for c in columns]
    header_lines = max(h.count("\n") + 1 for h in headers)
    width = tile * ncols + 1.0  # the row labels' column
    height = k * (tile + 0.1) + 0.17 * header_lines + 1.0
    fig = _figure(width, height)
    grid = fig.subplots(k, ncols, squeeze=False)
    truth_color, pred_color, outline = "#ffd700", "#ff3b3b", "#00e5ff"
    for i in range(k):
        masks = [None, truth[i], *(p[i] for p in preds.values())]
        for j, (ax, mask) in enumerate(zip(grid[i], masks, strict=True)):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if mask is not None and several:
                ax.imshow(
                    np.ma.masked_where(mask == 0, mask.astype(float)),
                    cmap=ListedColormap(palette),
                    vmin=0.5,
                    vmax=len(classes) + 0.5,
                    alpha=0.55,
                    interpolation="nearest",
                )
            elif mask is not None:
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
                edge = truth[i] > 0
                if 0 < edge.sum() < edge.size:
                    ax.contour(edge.astype(float), levels=[0.5], colors=outline, linewidths=1)
                score = (
                    _class_dice(mask, truth[i], len(classes)) if several else _dice(mask, truth[i])
                )
                ax.set_xlabel(f"Dice {score:.2f}", fontsize=LABEL_PT, labelpad=2)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i == 0:
                ax.set_title(headers[j], fontsize=LABEL_PT)
        grid[i, 0].set_ylabel(
            _wrap(titles[i], _chars(0.9, LABEL_PT + 1)),
            fontsize=LABEL_PT + 1,
            rotation=0,
            ha="right",
            va="center",
            labelpad=6,
        )
    title = "Example test slices"
    if cell:
        title += f"; cell: {cell_text(cell)}"
    fig.suptitle(_wrap(title, _chars(width, 12)))
    if several:
        handles = [
            Patch(color=c, alpha=0.65, label=n) for c, n in zip(palette, classes, strict=True)
        ]
        handles.append(Line2D([], [], color=outline, lw=1.5, label="ground-truth outline"))
    else:
        handles = [
            Patch(color=truth_color, alpha=0.6, label="ground truth"),
            Patch(color=pred_color, alpha=0.6, label="prediction"),
            Line2D([], [], color=outline, lw=1.5, label="ground-truth outline"),
        ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4))
    return fig


def plot_examples(
    images: Any,
    truth: Any,
    predictions: Mapping[str, Any],
    folder: str | Path,
    titles: Sequence[str] | None = None,
    cell: Mapping[str, Any] | None = None,
    classes: Sequence[str] = (),
) -> Path:
    """``examples.png``: ``draw_examples`` written into ``folder``."""
    figure = draw_examples(images, truth, predictions, titles, cell, classes)
    return _save(figure, folder, "examples.png")


def plot_classes(summary: pd.DataFrame, folder: str | Path, axes: Sequence[str] = ()) -> Path:
    """``classes.png``: ``draw_variants`` of a per-class summary
    (``kdcore.per_class.summarize_classes``), one pair of panels per class (and cell)."""
    return _save(draw_variants(summary, ["class", *axes]), folder, "classes.png")


# --- Per table ---------------------------------------------------------------------------


def learning_curve_panels(
    trials: pd.DataFrame,
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    axes: Sequence[str],
) -> list[tuple[str, dict[str, list[np.ndarray]]]]:
    """The panels of ``draw_learning_curves``: one per (cell, KD variant), each with the
    (step, validation Dice) curve of every seed of the variant and of its cell's baseline
    (one per cell when the grid has no KD variant)."""
    panels = []
    keys = list(axes)
    cells = trials.drop_duplicates(keys)[keys].to_dict("records") if keys else [{}]
    for cell in cells:
        rows = in_cell(trials, cell, keys)
        variants = list(dict.fromkeys(rows["variant"]))
        kd = [v for v in variants if v != BASELINE] or [BASELINE]
        where = _cell_label(keys, [cell[k] for k in keys]) if keys else ""
        for v in kd:
            title = ", ".join(t for t in (where, v) if t)
            series = {v: _curves(rows, histories, keys, v)}
            if v != BASELINE:
                series[BASELINE] = _curves(rows, histories, keys, BASELINE)
            panels.append((title, series))
    return panels


def _curves(
    rows: pd.DataFrame, histories: Mapping[str, Sequence[Mapping]], keys: list[str], variant: str
) -> list[np.ndarray]:
    """(step, validation Dice) of each seed of ``variant`` among ``rows``."""
    out = []
    for r in rows[rows["variant"] == variant].to_dict("records"):
        h = histories.get(history_name(r, keys))
        if h:
            out.append(np.array([[e["step"], e["val_dice"]] for e in h], dtype=float))
    return out


@_styled
def draw_learning_curves(
    trials: pd.DataFrame,
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    axes: Sequence[str],
) -> Figure:
    """Validation Dice against the optimiser step: a panel per (cell, KD variant), each
    seed a thin line and the mean over seeds a thick one, the variant in colour and its
    cell's baseline in grey; a dot on each seed's best validation (its checkpoint, unless
    the protocol chooses by test loss)."""
    panels = learning_curve_panels(trials, histories, axes)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(WIDTH_IN if ncols > 1 else 6.0, 0.9 + 2.6 * nrows)
    grid = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for (title, series), ax in zip(panels, grid, strict=False):
        for name, runs in series.items():
            color = BASELINE_COLOR if name == BASELINE else KD_COLOR
            for run in runs:
                ax.plot(run[:, 0], run[:, 1], color=color, lw=0.6, alpha=0.45)
                best = int(np.argmax(run[:, 1]))
                ax.plot(run[best, 0], run[best, 1], "o", color=color, ms=2.5, alpha=0.7)
            same = len({len(r) for r in runs}) == 1 and runs
            if same and all(np.array_equal(r[:, 0], runs[0][:, 0]) for r in runs):
                mean = np.mean([r[:, 1] for r in runs], axis=0)
                ax.plot(runs[0][:, 0], mean, color=color, lw=2.0, label=name)
        ax.set_title("\n".join(textwrap.wrap(title, 30)), loc="left", fontsize=9)
        ax.tick_params(labelsize=8)
    for i, ax in enumerate(grid):
        ax.set_visible(i < len(panels))
    fig.supxlabel("optimiser step", fontsize=10)
    fig.supylabel("validation Dice (0–1)", fontsize=10)
    seeds = trials["seed"].nunique()
    fig.suptitle(f"Learning curves: each of {seeds} seeds thin, their mean thick")
    handles = [
        Line2D([], [], color=KD_COLOR, lw=2, label="KD variant"),
        Line2D([], [], color=BASELINE_COLOR, lw=2, label=BASELINE),
        Line2D([], [], color="0.5", marker="o", ls="", ms=3, label="best\nvalidation"),
    ]
    fig.legend(handles=handles, loc="outside right center")
    return fig


def plot_learning_curves(
    trials: pd.DataFrame,
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    folder: str | Path,
    axes: Sequence[str] = (),
) -> Path:
    """``draw_learning_curves`` as ``folder/learning_curves.png``."""
    return _save(draw_learning_curves(trials, histories, axes), folder, "learning_curves.png")


@_styled
def draw_frontier(
    summary: pd.DataFrame, cards: Sequence[Mapping[str, Any]], teachers: Sequence[Mapping]
) -> Figure:
    """Test Dice against CPU latency (batch 1, 1 thread; log scale): each summary row at
    its student's latency (``student_cpu_ms``, from ``kdcore.report.with_costs``), a
    marker per variant with its 95% interval over seeds, the baseline's points joined;
    each teacher (``teachers``: name and test Dice) at its own card's latency."""
    if "student_cpu_ms" not in summary:
        raise ValueError("draw_frontier needs the summary's student_cpu_ms (with_costs)")
    variants = _variants(summary)
    colors = _colors(variants)
    fig = _figure(7.5, 4.8)
    ax = fig.subplots()
    shift = {v: 1.0 + 0.04 * (i - (len(variants) - 1) / 2) for i, v in enumerate(variants)}
    for v in variants:
        rows = summary[summary["variant"] == v].drop_duplicates(["student_cpu_ms"])
        rows = rows.sort_values("student_cpu_ms")
        x = rows["student_cpu_ms"].to_numpy(float) * shift[v]
        ax.errorbar(
            x,
            rows["dice_mean"],
            yerr=_errors(rows["dice_mean"], rows["dice_low"], rows["dice_high"]),
            color=colors[v],
            marker="o" if v == BASELINE else "D",
            ls="--" if v == BASELINE else "none",
            lw=1.2,
            capsize=3,
            label=v,
        )
    names = {c["model"]: c for c in cards}
    for c in cards:
        if c["role"] != "student":
            continue
        ms = c["cpu"]["b1-t1"]["median_ms"]
        ax.axvline(ms, color="0.75", lw=0.8, ls=":", zorder=0)
        ax.annotate(
            c["model"],
            (ms, 0),
            xycoords=("data", "axes fraction"),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=8,
            color="0.35",
        )
    for t in teachers:
        card = names.get(t["name"])
        if card is None:
            continue
        ms = card["cpu"]["b1-t1"]["median_ms"]
        ax.plot(ms, t["test"]["dice"], marker="*", ms=13, color="0.15", ls="none")
        ax.annotate(
            f"teacher {t['name']}",
            (ms, t["test"]["dice"]),
            xytext=(0, 8),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo / 1.3, hi * 1.3)
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("CPU latency per slice, ms (batch 1, 1 thread, eager; log scale)")
    ax.set_ylabel("test Dice (mean, 95% interval over seeds)")
    ax.set_title("Test Dice against what the network costs to run")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def plot_frontier(
    summary: pd.DataFrame,
    cards: Sequence[Mapping[str, Any]],
    teachers: Sequence[Mapping],
    folder: str | Path,
) -> Path:
    """``dice_vs_latency.png``: ``draw_frontier`` written into ``folder``."""
    return _save(draw_frontier(summary, cards, teachers), folder, "dice_vs_latency.png")


def figures_for(
    summary: pd.DataFrame, trials: pd.DataFrame, axes: Mapping[str, Sequence], folder: str | Path
) -> list[Path]:
    """Write the figures that fit a table's axes (name -> values, as the grid gives them)
    into ``folder``; return their paths.

    - ``data_fraction`` an axis: ``dice_vs_fraction.png`` (a panel per value of the
      other axes);
    - ``student.width`` an axis: ``dice_vs_params.png`` (likewise), so a table over both
      gets both figures;
    - ``budget.steps`` an axis: ``dice_vs_budget.png``, and ``dice_by_variant.png`` for
      the paired differences at each budget;
    - neither (no axes, or only other axes): ``dice_by_variant.png``, with one pair of
      panels per cell when there are axes;
    - one axis of labelled steps (a bundle axis, whose values each set several keys, e.g.
      the decomposition of the thesis's protocol) and one KD variant: also
      ``decomposition.png``, its Dice and the baseline's per step, and their difference.
      An axis of plain values (``phantom.difficulty``, say) is not a sequence of steps.
    """
    values = dict(axes)
    axes = list(values)
    paths = []
    kd = [v for v in _variants(summary) if v != BASELINE]
    steps_axis = len(axes) == 1 and all(isinstance(v, Mapping) for v in values[axes[0]])
    if steps_axis and len(kd) == 1:
        steps = decomposition_steps(summary, axes[0], kd[0])
        paths.append(plot_waterfall(steps, folder, kd[0]))
    if "data_fraction" in axes:
        paths.append(plot_fractions(summary, folder, axes))
    if "student.width" in axes:
        paths.append(plot_students(summary, trials, folder, axes))
    if "budget.steps" in axes:
        paths.append(plot_budget(summary, folder, axes))
    if not paths or "budget.steps" in axes:  # (a budget table also shows its differences)
        paths.append(plot_variants(summary, folder, axes))
    return paths

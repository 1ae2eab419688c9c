import re
import subprocess
import sys

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from kdcore.plots import (
    decomposition_steps,
    describe,
    draw_examples,
    draw_fractions,
    draw_learning_curves,
    draw_students,
    draw_variants,
    draw_waterfall,
    figures_for,
    plot_examples,
    plot_fractions,
    plot_learning_curves,
    plot_students,
    plot_variants,
    plot_waterfall,
)
from kdcore.rows import history_name
from kdcore.summary import summarize

WIDTH_PARAMS = {8: 14_625, 16: 57_297, 32: 227_233}
STUDENT = {8: "S(w8)", 16: "S1", 32: "S2"}


def grid(axes: dict[str, list], variants=("baseline", "mtms", "at"), seeds=3, gain=None):
    """Per-trial rows and per-patient counts of a synthetic grid over ``axes``.

    Dice grows with the data fraction and the width; ``gain`` (points) per KD variant.
    """
    gain = gain or {"baseline": 0.0, "mtms": 3.0, "at": -4.0}
    rng = np.random.default_rng(0)
    cells = pd.MultiIndex.from_product(list(axes.values()), names=list(axes)) if axes else [()]
    trials, cases = [], []
    for cell in cells:
        values = dict(zip(axes, cell if isinstance(cell, tuple) else (cell,), strict=True))
        width = values.get("student.width", 16)
        level = 0.6 + 0.2 * values.get("data_fraction", 1.0) + 0.02 * np.log2(width / 8)
        for variant in variants:
            for seed in range(seeds):
                d = level + gain[variant] / 100 + rng.normal(0, 0.01)
                trials.append(
                    {
                        **values,
                        "variant": variant,
                        "seed": seed,
                        "student": STUDENT[width],
                        "params": WIDTH_PARAMS[width],
                        **{m: d for m in ("dice", "iou", "recall", "precision", "dice_3d")},
                        "wall_s": 5.0,
                    }
                )
                for case in range(4):
                    tp = round(100 * d) + case
                    cases.append(
                        {**values, "variant": variant, "seed": seed, "case": case}
                        | {"tp": tp, "fp": 10, "fn": 100 - tp}
                    )
    return pd.DataFrame(trials), pd.DataFrame(cases)


def assert_png(path, min_width=500, min_height=250):
    assert path.exists() and path.stat().st_size > 5_000
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert min_width <= width <= 2_500 and min_height <= height <= 4_000, image.shape
    assert image.std() > 0.01  # not a blank canvas


def test_plot_variants_draws_dice_and_the_differences(tmp_path):
    trials, cases = grid({})
    summary = summarize(trials, cases)
    assert set(summary["verdict"].dropna()) == {"gain", "loss"}
    drawn = describe(draw_variants(summary))
    left = drawn.panel("Mean test Dice")
    assert left.yticks == ["baseline", "mtms", "at"]
    for r in summary.itertuples():  # each variant's mean Dice at its row
        assert left.series[r.variant].tolist() == [[pytest.approx(r.dice_mean), r.Index]]
    right = drawn.panel("KD − baseline")
    assert sorted(right.series) == ["Δ at", "Δ mtms"]
    assert right.series["Δ mtms"][0, 0] == pytest.approx(summary["delta"].iloc[1])
    assert "gain, 3/3 won" in right.texts and "loss, 0/3 won" in right.texts
    assert "clipped to [0, 1]" in drawn.title
    path = plot_variants(summary, tmp_path)
    assert path == tmp_path / "dice_by_variant.png"
    assert_png(path, min_width=800)


def test_dice_axes_and_bands_stay_inside_zero_one(tmp_path):
    """Wide intervals near 0 and 1 (one seed at 0.02, others near 0.99) are clipped: no
    band, bar or axis goes beyond the metric's range."""
    trials, cases = grid({"student.width": [8, 16]}, variants=("baseline", "mtms"))
    trials.loc[trials["variant"] == "mtms", "dice"] = [0.02, 0.99, 0.99, 0.03, 0.98, 0.99]
    trials.loc[trials["variant"] == "baseline", "dice"] = [0.995, 0.999, 0.98] * 2
    summary = summarize(trials, cases, ["student.width"])
    assert summary["dice_clipped"].all()
    assert summary["dice_low"].min() == 0.0 and summary["dice_high"].max() == 1.0
    panel = describe(draw_students(summary, trials)).panels[0]
    assert 0.0 <= panel.ylim[0] < panel.ylim[1] <= 1.0
    flat = summarize(*grid({}, variants=("baseline", "mtms")))
    flat.loc[1, ["dice_low", "dice_high"]] = [0.0, 1.0]
    left = describe(draw_variants(flat)).panel("Mean test Dice")
    assert 0.0 <= left.xlim[0] < left.xlim[1] <= 1.0


def test_an_axis_of_one_value_shows_its_intervals_as_error_bars():
    """A band over one x value has no area: each variant gets an error bar instead."""
    from matplotlib.container import ErrorbarContainer

    trials, cases = grid({"student.width": [32]}, variants=("baseline", "mtms"))
    figure = draw_students(summarize(trials, cases, ["student.width"]), trials)
    bars = [c for c in figure.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2
    trials, cases = grid({"student.width": [16, 32]}, variants=("baseline", "mtms"))
    figure = draw_students(summarize(trials, cases, ["student.width"]), trials)
    assert not [c for c in figure.axes[0].containers if isinstance(c, ErrorbarContainer)]


def test_plot_fractions_one_panel_per_other_axis_value(tmp_path):
    trials, cases = grid({"data_fraction": [0.1, 0.25, 0.5, 1.0]})
    summary = summarize(trials, cases, ["data_fraction"])
    (panel,) = describe(draw_fractions(summary)).panels
    assert panel.xticks == ["10%", "25%", "50%", "100%"]
    baseline = summary[summary["variant"] == "baseline"]
    assert panel.series["baseline"][:, 0].tolist() == [10, 25, 50, 100]
    assert panel.series["baseline"][:, 1] == pytest.approx(baseline["dice_mean"].to_numpy())
    one = plot_fractions(summary, tmp_path / "one")
    assert one.name == "dice_vs_fraction.png"
    assert_png(one)
    axes = {"data_fraction": [0.25, 1.0], "student.width": [8, 16, 32]}
    trials, cases = grid(axes)
    summary = summarize(trials, cases, list(axes))
    drawn = describe(draw_fractions(summary))
    assert [p.title for p in drawn.panels] == [f"student width {w}" for w in (8, 16, 32)]
    for panel in drawn.panels:
        assert sorted(panel.series) == ["at", "baseline", "mtms"]
    many = plot_fractions(summary, tmp_path / "many")
    assert_png(many, min_width=800)


def test_plot_students_names_the_thesis_students_on_the_axis(tmp_path):
    trials, cases = grid({"student.width": [8, 16, 32]}, variants=("baseline", "mtms"))
    summary = summarize(trials, cases, ["student.width"])
    (panel,) = describe(draw_students(summary, trials)).panels
    # S1 and S2 are written under their ticks: nothing is written on the data
    assert panel.xticks == ["15k\nw8", "57k\nw16\nS1", "227k\nw32\nS2"]
    assert panel.texts == []
    assert panel.series["mtms"][:, 0].tolist() == [14_625, 57_297, 227_233]
    path = plot_students(summary, trials, tmp_path)
    assert path.name == "dice_vs_params.png"
    assert_png(path)
    with pytest.raises(ValueError, match="student.width"):
        plot_students(summary, trials.drop(columns="params"), tmp_path)


def steps_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "step": ["thesis protocol", "+ patient split", "+ 5 seeds", "+ validation pick"],
            "delta": [82.1, 1.0, 0.4, np.nan],
            "delta_low": [77.8, -0.2, np.nan, np.nan],
            "delta_high": [86.4, 2.2, np.nan, np.nan],
            "baseline_dice": [0.090, 0.880, 0.890, 0.894],
            "baseline_low": [0.048, 0.860, np.nan, 0.880],
            "baseline_high": [0.133, 0.900, np.nan, 0.910],
            "kd_dice": [0.911, 0.890, 0.894, np.nan],
            "kd_low": [0.903, 0.870, np.nan, np.nan],
            "kd_high": [0.919, 0.910, np.nan, np.nan],
        }
    )


def test_plot_waterfall_shows_both_levels_and_their_difference(tmp_path):
    steps = steps_frame()
    drawn = describe(draw_waterfall(steps, "kd-T1S1"))
    levels = drawn.panel("Test Dice of the baseline and of kd-T1S1")
    assert levels.series["baseline"][:, 1] == pytest.approx(steps["baseline_dice"])
    assert levels.series["kd-T1S1"][:3, 1] == pytest.approx(steps["kd_dice"][:3])
    assert "0.090" in levels.texts and "0.911" in levels.texts  # the baseline's own level
    assert 0.0 <= levels.ylim[0] < levels.ylim[1] <= 1.0
    difference = drawn.panel("Their difference")
    assert difference.series["KD − baseline"][:3, 1] == pytest.approx(steps["delta"][:3])
    assert "+82.10" in difference.texts and "no value" in difference.texts
    assert difference.xticks[0] == "thesis protocol"
    path = plot_waterfall(steps, tmp_path)
    assert path.name == "decomposition.png"
    assert_png(path)
    with pytest.raises(ValueError, match="baseline_dice"):
        plot_waterfall(steps.drop(columns="baseline_dice"), tmp_path)


def test_decomposition_steps_pairs_each_kd_row_with_its_baseline():
    trials, cases = grid({"step": ["0 thesis", "1 + split"]}, variants=("baseline", "mtms"))
    summary = summarize(trials, cases, ["step"])
    steps = decomposition_steps(summary, "step", "mtms")
    assert list(steps["step"]) == ["0 thesis", "1 + split"]
    base = summary[summary["variant"] == "baseline"]
    assert steps["baseline_dice"].tolist() == pytest.approx(base["dice_mean"].tolist())
    assert steps["delta"].tolist() == pytest.approx(summary["delta"].dropna().tolist())


def example_arrays(k: int = 3):
    """k 32x32 slices; the first one's organ an 8x8 square (64 pixels), the third empty."""
    yy, xx = np.mgrid[:32, :32]
    images = np.stack([np.clip((xx + yy) / 62 + 0.1 * i, 0, 1) for i in range(k)])
    truth = np.stack([(xx - 16) ** 2 + (yy - 16) ** 2 < r**2 for r in (6, 8, 0, 5)[:k]])
    truth[0] = (8 <= yy) & (yy < 16) & (8 <= xx) & (xx < 16)
    return images, truth


def test_plot_examples_has_a_column_per_prediction_and_names_its_cell(tmp_path):
    images, truth = example_arrays()
    predictions = {
        "teacher": truth,
        "baseline": np.roll(truth, 4, axis=2),
        "bottleneck+dec+pmd": np.ones_like(truth),  # a full and an empty truth: no contour
    }
    cell = {"teacher": "T1", "student.width": 16}
    fig = draw_examples(images, truth, predictions, ["a", "b", "c"], cell)
    drawn = describe(fig)
    assert drawn.title == "Example test slices; cell: teacher=T1, student.width=16"
    assert len(drawn.panels) == 3 * 5 and all(p.images >= 1 for p in drawn.panels)
    header = [re.sub(r"\s", "", p.title) for p in drawn.panels[:5]]
    assert header == ["input", "groundtruth", "teacher", "baseline", "bottleneck+dec+pmd"]
    assert [p.ylabel for p in drawn.panels[::5]] == ["a", "b", "c"]
    # each prediction's Dice on its slice, under its tile: shifted by half the square,
    # 2 * 32 / (64 + 64); everywhere, 2 * 64 / (1024 + 64)
    assert [p.xlabel for p in drawn.panels[2:5]] == ["Dice 1.00", "Dice 0.50", "Dice 0.12"]
    assert [p.xlabel for p in drawn.panels[:2]] == ["", ""]
    path = plot_examples(images, truth, predictions, tmp_path, titles=["a", "b", "c"], cell=cell)
    assert path.name == "examples.png"
    assert_png(path)
    with pytest.raises(ValueError, match="shape"):
        plot_examples(images, truth[:, :16], predictions, tmp_path)


@pytest.mark.parametrize("variants", [3, 10, 24])
def test_example_labels_fit_their_tiles_at_any_number_of_columns(variants):
    """Column titles and Dice texts no wider than their tile, row labels not overlapping
    each other or the tiles (seen: 'example 2' ran into 'example 3')."""
    images, truth = example_arrays(4)
    names = ["teacher", "baseline", "enc+bottleneck+dec+pmd", "fitnets-mse-with-a-long-name"]
    predictions = {f"{names[i % 4]}-{i}": truth for i in range(variants)}
    titles = ["spleen_003 slice 17", "example 2", "example 3", "patient 12, slice 140"]
    fig = draw_examples(images, truth, predictions, titles, {"step": "3 + validation selection"})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    tiles = np.array(fig.axes).reshape(4, -1)
    for ax in tiles.ravel():
        box = ax.get_window_extent(renderer)
        for label in (ax.title, ax.xaxis.label):
            if label.get_text():
                assert label.get_window_extent(renderer).width <= box.width + 1, label.get_text()
    rows = [ax.yaxis.label.get_window_extent(renderer) for ax in tiles[:, 0]]
    for upper, lower in zip(rows, rows[1:], strict=False):
        assert upper.y0 >= lower.y1  # stacked, not overlapping
    for ax, label in zip(tiles[:, 0], rows, strict=True):
        assert label.x1 <= ax.get_window_extent(renderer).x0


@pytest.mark.parametrize(
    ("axes", "names"),
    [
        ({}, ["dice_by_variant.png"]),
        ({"data_fraction": [0.25, 1.0]}, ["dice_vs_fraction.png"]),
        ({"student.width": [8, 16]}, ["dice_vs_params.png"]),
        (
            {"data_fraction": [0.25, 1.0], "student.width": [16, 32]},
            ["dice_vs_fraction.png", "dice_vs_params.png"],
        ),
        ({"kd.temperature": [1, 4]}, ["dice_by_variant.png"]),
        ({"budget.steps": [224, 896]}, ["dice_vs_budget.png", "dice_by_variant.png"]),
    ],
)
def test_figures_for_picks_the_figures_of_the_axes(tmp_path, axes, names):
    trials, cases = grid(axes, seeds=2)
    summary = summarize(trials, cases, list(axes))
    paths = figures_for(summary, trials, axes, tmp_path)
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for p in paths:
        assert_png(p)


def test_a_single_seed_has_nan_intervals_and_still_plots(tmp_path):
    axes = {"data_fraction": [0.5, 1.0], "student.width": [16, 32]}
    trials, cases = grid(axes, seeds=1)
    summary = summarize(trials, cases, list(axes))
    assert summary["dice_low"].isna().all() and summary["delta_low"].isna().any()
    figures_for(summary, trials, axes, tmp_path)
    flat_trials, flat_cases = grid({}, seeds=1)
    plot_variants(summarize(flat_trials, flat_cases), tmp_path)
    for name in ("dice_vs_fraction.png", "dice_vs_params.png", "dice_by_variant.png"):
        assert_png(tmp_path / name)


def test_importing_plots_does_not_import_torch():
    code = "import sys, kdcore.plots; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_table_of_steps_gets_the_decomposition(tmp_path):
    steps = [{"label": "0 thesis protocol"}, {"label": "1 + patient split", "split": "patient"}]
    trials, cases = grid({"step": [v["label"] for v in steps]}, ("baseline", "mtms"), seeds=2)
    summary = summarize(trials, cases, ["step"])
    paths = figures_for(summary, trials, {"step": steps}, tmp_path)
    assert [p.name for p in paths] == ["decomposition.png"]
    assert_png(paths[0])


def test_an_axis_of_plain_names_is_not_drawn_as_steps(tmp_path):
    axes = {"phantom.difficulty": ["easy", "standard", "hard"]}
    trials, cases = grid(axes, variants=("baseline", "mtms"), seeds=2)
    summary = summarize(trials, cases, list(axes))
    paths = figures_for(summary, trials, axes, tmp_path)
    assert [p.name for p in paths] == ["dice_by_variant.png"]


def test_learning_curves_have_a_panel_per_cell_and_kd_variant_with_every_seed(tmp_path):
    trials, _ = grid({"data_fraction": [0.25, 1.0]})
    histories = {
        history_name(r, ["data_fraction"]): [
            {"step": step, "val_dice": r["dice"] * step / 100} for step in (20, 60, 100)
        ]
        for r in trials.to_dict("records")
    }
    drawn = describe(draw_learning_curves(trials, histories, ["data_fraction"]))
    titles = [p.title for p in drawn.panels]
    assert titles == [
        "25% of patients, mtms",
        "25% of patients, at",
        "100% of patients, mtms",
        "100% of patients, at",
    ]
    panel = drawn.panel("100% of patients, at")
    # the means over seeds are the labelled lines, at the validation steps
    assert set(panel.series) == {"at", "baseline"}
    assert list(panel.series["at"][:, 0]) == [20, 60, 100]
    at = trials[(trials["variant"] == "at") & (trials["data_fraction"] == 1.0)]["dice"].mean()
    assert panel.series["at"][-1, 1] == pytest.approx(at)
    assert "KD variant" in drawn.legend and "baseline" in drawn.legend
    assert_png(plot_learning_curves(trials, histories, tmp_path, ["data_fraction"]))

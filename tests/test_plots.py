import subprocess
import sys

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from kdcore.plots import (
    figures_for,
    plot_examples,
    plot_fractions,
    plot_students,
    plot_variants,
    plot_waterfall,
)
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
    path = plot_variants(summary, tmp_path)
    assert path == tmp_path / "dice_by_variant.png"
    assert_png(path, min_width=800)


def test_plot_fractions_one_panel_per_other_axis_value(tmp_path):
    trials, cases = grid({"data_fraction": [0.1, 0.25, 0.5, 1.0]})
    one = plot_fractions(summarize(trials, cases, ["data_fraction"]), tmp_path / "one")
    assert one.name == "dice_vs_fraction.png"
    assert_png(one)
    axes = {"data_fraction": [0.25, 1.0], "student.width": [8, 16, 32]}
    trials, cases = grid(axes)
    many = plot_fractions(summarize(trials, cases, list(axes)), tmp_path / "many")
    assert_png(many, min_width=800)
    # three panels side by side: a wider figure than the single panel
    assert matplotlib.image.imread(many).shape[1] > matplotlib.image.imread(one).shape[1]


def test_plot_students_takes_parameters_from_the_trials(tmp_path):
    trials, cases = grid({"student.width": [8, 16, 32]}, variants=("baseline", "mtms"))
    summary = summarize(trials, cases, ["student.width"])
    path = plot_students(summary, trials, tmp_path)
    assert path.name == "dice_vs_params.png"
    assert_png(path)
    with pytest.raises(ValueError, match="student.width"):
        plot_students(summary, trials.drop(columns="params"), tmp_path)


def test_plot_waterfall(tmp_path):
    steps = pd.DataFrame(
        {
            "step": ["thesis protocol", "+ patient split", "+ 5 seeds", "+ validation pick"],
            "delta": [2.1, 1.0, 0.4, np.nan],
            "delta_low": [1.5, -0.2, np.nan, np.nan],
            "delta_high": [2.7, 2.2, np.nan, np.nan],
        }
    )
    path = plot_waterfall(steps, tmp_path)
    assert path.name == "decomposition.png"
    assert_png(path)
    with pytest.raises(ValueError, match="delta_low"):
        plot_waterfall(steps.drop(columns="delta_low"), tmp_path)


def test_plot_examples(tmp_path):
    yy, xx = np.mgrid[:32, :32]
    images = np.stack([np.clip((xx + yy) / 62 + 0.1 * k, 0, 1) for k in range(3)])
    truth = np.stack([(xx - 16) ** 2 + (yy - 16) ** 2 < r**2 for r in (6, 8, 0)])
    predictions = {
        "teacher": truth,
        "baseline": np.roll(truth, 3, axis=2),
        "mtms": np.ones_like(truth),  # a full and (row 3) an empty truth draw no contour
    }
    path = plot_examples(images, truth, predictions, tmp_path, titles=["a", "b", "c"])
    assert path.name == "examples.png"
    assert_png(path)
    with pytest.raises(ValueError, match="shape"):
        plot_examples(images, truth[:, :16], predictions, tmp_path)


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
    ],
)
def test_figures_for_picks_the_figures_of_the_axes(tmp_path, axes, names):
    trials, cases = grid(axes, seeds=2)
    summary = summarize(trials, cases, list(axes))
    paths = figures_for(summary, trials, list(axes), tmp_path)
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for p in paths:
        assert_png(p)


def test_a_single_seed_has_nan_intervals_and_still_plots(tmp_path):
    axes = {"data_fraction": [0.5, 1.0], "student.width": [16, 32]}
    trials, cases = grid(axes, seeds=1)
    summary = summarize(trials, cases, list(axes))
    assert summary["dice_low"].isna().all() and summary["delta_low"].isna().any()
    figures_for(summary, trials, list(axes), tmp_path)
    flat_trials, flat_cases = grid({}, seeds=1)
    plot_variants(summarize(flat_trials, flat_cases), tmp_path)
    for name in ("dice_vs_fraction.png", "dice_vs_params.png", "dice_by_variant.png"):
        assert_png(tmp_path / name)


def test_importing_plots_does_not_import_torch():
    code = "import sys, kdcore.plots; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

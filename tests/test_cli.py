"""The command line end to end: a smoke grid through Ray Tune, and every bad input."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import REPO, write_msd_folder

SCALES = [
    "baseline",
    "enc",
    "bottleneck",
    "dec",
    "pmd",
    "bottleneck+pmd",
    "enc+pmd",
    "bottleneck+dec+pmd",
    "enc+bottleneck+dec+pmd",
]


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke profile's ablation=scales grid, run twice (the second resumes)."""
    tmp = tmp_path_factory.mktemp("smoke")
    args = [
        "ablation=scales",
        "profile=smoke",
        f"results_dir={tmp / 'results'}",
        f"work_dir={tmp / 'work'}",
    ]
    first = run_cli(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = run_cli(*args)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return tmp, first, second


def test_smoke_grid_writes_one_row_per_trial(smoke_run):
    tmp, first, _ = smoke_run
    table = pd.read_csv(tmp / "results" / "ablation_scales.csv")
    expected = {
        "variant",
        "seed",
        "teacher",
        "student",
        "params",
        "data_fraction",
        "dice",
        "iou",
        "recall",
        "precision",
        "dice_3d",
        "wall_s",
    }
    assert expected <= set(table.columns)
    assert len(table) == len(SCALES) * 3
    assert sorted(set(table["variant"])) == sorted(SCALES)
    assert (
        table[["dice", "iou", "recall", "precision", "dice_3d"]]
        .apply(lambda c: c.between(0, 1).all())
        .all()
    )
    assert (table["params"] == 57_297).all()


def test_smoke_report_has_summary_teacher_and_provenance(smoke_run):
    tmp, first, _ = smoke_run
    report = (tmp / "results" / "ablation_scales.md").read_text()
    for needle in (
        "Teacher: T1(w8,d3)",
        "phantom CT",
        "patient split",
        "Δ dice vs baseline",
        "Command: `python bench/run.py ablation=scales profile=smoke",
        "Git commit:",
        "```yaml",
    ):
        assert needle in report
    assert "teacher: training" in first.stdout


def test_second_run_reuses_teacher_and_finished_trials(smoke_run):
    _, _, second = smoke_run
    assert "teacher: reusing" in second.stdout
    assert "teacher: training" not in second.stdout
    assert "ray: resuming" in second.stdout


def _tiny_msd_args(tmp_path, **kw):
    root = write_msd_folder(tmp_path / "msd", **kw)
    return ["data=msd_spleen", f"data.root={root}"]


BAD_INPUTS = {
    "unknown ablation": (["ablation=nope"], "ablation/nope"),
    "unknown profile": (["profile=nope"], "profile/nope"),
    "unknown data": (["data=nope"], "data/nope"),
    "unknown variant": (["variants=[baseline,distill]"], "unknown KD term 'distill'"),
    "unknown scale": (["variants=[enc+middle]"], "unknown KD term 'middle'"),
    "fraction zero": (["data_fraction=0"], "data_fraction must be in (0, 1]"),
    "fraction above one": (["data_fraction=1.5"], "data_fraction must be in (0, 1]"),
    "missing folder": (["data=msd_spleen", "data.root=/nonexistent/msd"], "not found under"),
    "batch of one with InfoNCE": (
        ["variants=[baseline,bottleneck]", "student.fit.batch_size=1"],
        "batch_size must be at least 2",
    ),
    "teacher cache with augmentation": (
        ["kd.teacher_cache=true", "student.fit.augment=true"],
        "cannot be used with student.fit.augment=true",
    ),
}


@pytest.mark.parametrize("args, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gives_one_clear_error(args, message, tmp_path):
    results = tmp_path / "results"
    profile = [] if any(a.startswith("profile=") for a in args) else ["profile=smoke"]
    proc = run_cli(*args, *profile, f"results_dir={results}", f"work_dir={tmp_path / 'w'}")
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not results.exists() or not any(results.iterdir())


def test_grid_runs_on_an_msd_layout_folder(tmp_path):
    args = _tiny_msd_args(tmp_path, shapes=[(40, 40, 6)] * 6)
    results = tmp_path / "r"
    proc = run_cli(
        *args,
        "profile=smoke",
        "image_size=16",
        "seeds=[0]",
        "variants=[baseline,all]",
        f"results_dir={results}",
        f"work_dir={tmp_path / 'w'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(results / "grid.csv")
    assert list(table["variant"]) == ["baseline", "all"]
    assert "MSD Task09_Spleen" in (results / "grid.md").read_text()


def test_grid_reads_teacher_taps_from_the_cache(tmp_path):
    results = tmp_path / "r"
    args = [
        "profile=smoke",
        "seeds=[0]",
        "variants=[baseline,all]",
        "kd.teacher_cache=true",
        f"results_dir={results}",
        f"work_dir={tmp_path / 'w'}",
    ]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "teacher outputs: caching" in proc.stdout and "KiB per slice" in proc.stdout
    assert len(pd.read_csv(results / "grid.csv")) == 2
    assert list((tmp_path / "w" / "teachers").glob("*/outputs/dec.npy"))


def test_label_shape_mismatch_is_reported(tmp_path):
    args = _tiny_msd_args(
        tmp_path, shapes=[(16, 16, 4)] * 5, label_shapes=[(16, 16, 4)] * 4 + [(16, 16, 3)]
    )
    proc = run_cli(
        *args, "profile=smoke", f"results_dir={tmp_path / 'r'}", f"work_dir={tmp_path / 'w'}"
    )
    assert proc.returncode == 2 and "must match voxel for voxel" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


def test_empty_dataset_is_reported(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "dataset.json").write_text('{"training": []}')
    proc = run_cli(
        "data=msd_spleen",
        f"data.root={root}",
        "profile=smoke",
        f"results_dir={tmp_path / 'r'}",
        f"work_dir={tmp_path / 'w'}",
    )
    assert proc.returncode == 2 and "dataset is empty" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()

"""The command line end to end: a smoke grid through Ray Tune, resumed, beside a stale
Ray session; a grid on an MSD-layout folder; the teacher-output cache; CI runs the
README's test command. (Bad inputs: test_bad_inputs.py.)"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, run_cli, write_msd_folder

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


def table_of(results, ablation: str):
    """The one table folder under results/<ablation>/."""
    (folder,) = (results / ablation).iterdir()
    return folder


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke profile's ablation=scales grid, run twice (the second reuses every trial), with a
    stale Ray session on the machine: Ray's temp folder names a head that no longer runs,
    as an uncleanly stopped `ray start` leaves it."""
    tmp = tmp_path_factory.mktemp("smoke")
    ray_tmp = tempfile.mkdtemp(prefix="kdray")  # short: Ray's socket paths must be
    (Path(ray_tmp) / "ray").mkdir()
    (Path(ray_tmp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:59999\n")
    args = [
        "ablation=scales",
        "profile=smoke",
        "seeds=[0,1,2]",
        f"results_dir={tmp / 'results'}",
        f"work_dir={tmp / 'work'}",
    ]
    try:
        first = run_cli(*args, RAY_TMPDIR=ray_tmp)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        second = run_cli(*args, RAY_TMPDIR=ray_tmp)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return tmp, first, second


def test_smoke_grid_writes_one_row_per_trial(smoke_run):
    tmp, first, _ = smoke_run
    table = pd.read_csv(table_of(tmp / "results", "scales") / "trials.csv")
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
    folder = table_of(tmp / "results", "scales")
    assert folder.name.startswith("smoke-phantom-T1w8d3-S1-frac0.5-patient-")
    report = (folder / "table.md").read_text()
    for needle in (
        "Teacher: T1(w8,d3)",
        "phantom CT",
        "patient split",
        "Δ dice pts, paired by seed [95% CI]",
        "bootstrap over the test patients",
        "Command: `python bench/run.py ablation=scales profile=smoke",
        "Git commit:",
        "```yaml",
    ):
        assert needle in report
    assert "teacher: training" in first.stdout
    assert "teacher epoch 6/6 (finished)" in first.stdout and "trial 27/27" in first.stdout
    assert f"table {folder / 'table.md'}" in first.stdout.splitlines()[-1]
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["command"].startswith("python bench/run.py ablation=scales")
    assert folder.name in (tmp / "results" / "index.md").read_text()


def test_smoke_history_has_each_term_per_epoch(smoke_run):
    tmp, _, _ = smoke_run
    history = table_of(tmp / "results", "scales") / "history"
    assert len(list(history.iterdir())) == len(SCALES) * 3
    table = pd.read_csv(history / "bottleneck+pmd-seed1.csv")
    assert list(table["step"]) == [2, 4, 6, 8] and list(table["epoch"]) == [1, 2, 3, 4]
    assert {"train_loss", "loss_seg", "loss_bottleneck", "loss_pmd", "val_dice"} <= set(table)


def test_second_run_reuses_teacher_and_finished_trials(smoke_run):
    _, _, second = smoke_run
    assert "teacher: reusing" in second.stdout
    assert "teacher: training" not in second.stdout
    assert "grid: 27 trials: 27 reused from the trial store" in second.stdout
    assert "ray: " not in second.stdout  # nothing left to train: Ray is not even started


def test_grid_runs_on_an_msd_layout_folder(tmp_path):
    root = write_msd_folder(tmp_path / "msd", [(40, 40, 6)] * 6)
    args = ["data=msd_spleen", f"data.root={root}"]
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
    folder = table_of(results, "grid")
    assert list(pd.read_csv(folder / "trials.csv")["variant"]) == ["baseline", "all"]
    assert "MSD Task09_Spleen" in (folder / "table.md").read_text()


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
    assert len(pd.read_csv(table_of(results, "grid") / "trials.csv")) == 2
    assert list((tmp_path / "w" / "teachers").glob("*/outputs/dec.npy"))


def test_ci_runs_the_readmes_test_command_and_the_slow_tests():
    readme = (REPO / "README.md").read_text().splitlines()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    command = ci[-1]
    assert command in readme  # exactly as written there
    assert command.endswith("&& pytest && pytest -m slow")  # the default run skips slow ones


def test_multi_organ_grid_writes_per_class_tables_and_figures(tmp_path):
    results = tmp_path / "r"
    proc = run_cli(
        "profile=smoke",
        "data=phantom_organs",
        "seeds=[0,1]",
        "variants=[baseline,all,hinton]",
        f"results_dir={results}",
        f"work_dir={tmp_path / 'w'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = table_of(results, "grid")
    assert "-5class-" in folder.name
    report = (folder / "table.md").read_text()
    for name in ("spleen", "kidneys", "liver", "stomach", "pancreas"):
        assert f"### {name}" in report
    cases = pd.read_csv(folder / "cases.csv")
    assert set(cases["class"]) == {"spleen", "kidneys", "liver", "stomach", "pancreas"}
    assert (folder / "classes.png").is_file() and (folder / "examples.png").is_file()
    trials = pd.read_csv(folder / "trials.csv")
    assert trials["dice"].between(0, 1).all()
    # a re-render recomputes the per-class section and figure from the stored counts
    before = report[report.index("## Per class") : report.index("- Time per trial")]
    (folder / "classes.png").unlink()
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "rerender.py"), str(folder)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = (folder / "table.md").read_text()
    assert again[again.index("## Per class") : again.index("- Time per trial")] == before
    assert (folder / "classes.png").is_file()

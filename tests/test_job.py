"""The job called in-process (``kdcore.run_job``): tables of other settings are written
beside each other, each with its history, and the index lists them all."""

import logging
import subprocess
import sys

import pandas as pd
import pytest
import ray

import kdcore
from kdcore.settings import compose_config
from kdcore.table_folder import STORE_NAME
from kdcore.trial_store import read_entries
from tests.conftest import REPO, smoke_config


def run_store(*args: str) -> subprocess.CompletedProcess:
    """``python bench/store.py *args`` from the checkout."""
    script = str(REPO / "bench" / "store.py")
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True)


def make(tmp_path, *overrides: str):
    return smoke_config(tmp_path, "variants=[baseline,pmd]", "seeds=[0]", *overrides)


@pytest.fixture
def local_ray():
    yield
    ray.shutdown()


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_run_job_in_process_writes_beside_other_settings(tmp_path, local_ray):
    lines = []
    # Tune's result grid looks for per-trial files the suite turns off; it must not warn
    tune_analysis, records = logging.getLogger("ray.tune.analysis.experiment_analysis"), Records()
    tune_analysis.addHandler(records)
    try:
        first = kdcore.run_job(make(tmp_path), "first", lines.append)
        tune_analysis.warning("another warning")
    finally:
        tune_analysis.removeHandler(records)
    assert records.messages == ["another warning"]
    axes = "+axes={data_fraction:[0.5,1.0]}"
    second = kdcore.run_job(make(tmp_path, axes), "second", lines.append)
    assert first[0].parent != second[0].parent
    assert first[0].parent.parent == second[0].parent.parent == tmp_path / "results" / "grid"
    assert "-frac-axis-" in second[0].parent.name and "-frac0.5-" in first[0].parent.name
    assert list(pd.read_csv(first[1])["variant"]) == ["baseline", "pmd"]
    trials = pd.read_csv(second[1])
    assert list(zip(trials["data_fraction"], trials["variant"], strict=True)) == [
        (0.5, "baseline"),
        (0.5, "pmd"),
        (1.0, "baseline"),
        (1.0, "pmd"),
    ]
    history = pd.read_csv(second[0].parent / "history" / "data_fraction=1.0_pmd-seed0.csv")
    assert {"loss_seg", "loss_pmd"} <= set(history.columns)
    cases = pd.read_csv(second[0].parent / "cases.csv")
    assert (
        len(cases) == 4 * cases["case"].nunique() and (cases[["tp", "fp", "fn"]] >= 0).all().all()
    )
    table = second[0].read_text()
    assert "- Grid: data_fraction (0.5, 1.0) x variant (2) x seed (1)" in table
    for figure in ("dice_vs_fraction.png", "examples.png"):
        assert (second[0].parent / figure).stat().st_size > 1000 and f"]({figure})" in table
    assert (first[0].parent / "dice_by_variant.png").is_file()
    assert "- Time per trial (mean seconds): data" in table
    index = (tmp_path / "results" / "index.md").read_text()
    assert index.index(second[0].parent.name) < index.index(first[0].parent.name)
    assert "`first`" in index and "`second`" in index
    assert sum("teacher: training" in line for line in lines) == 1  # one teacher serves all
    assert lines[-1].startswith("done in ") and str(second[0]) in lines[-1]


def test_decomposition_runs_each_step_and_labels_the_protocol(tmp_path, local_ray):
    paths = kdcore.run_job(make(tmp_path, "ablation=decomposition", "seeds=[0,1]"), "d", print)
    trials = pd.read_csv(paths[1])
    assert trials["step"].nunique() == 7 and len(trials) == 7 * 2 * 2
    # baselines that differ only in KD settings (steps 3 to 5) are one trial, reused
    assert trials["reused"].sum() == 0 and len(set(trials["trained"])) < len(trials)
    table = paths[0].read_text()
    assert "Protocol: THESIS, which departs from the fair protocol" in table
    assert "The grid's axes change kd.heads, kd.pmd_mode, protocol.baseline_fit" in table
    assert "| 5 + prediction-map KL" in table and "| 2b one optimiser, the baseline's" in table
    assert "- Budget: 16 optimiser steps per run" in table
    assert "-split-axis-thesis-" in paths[0].parent.name


def test_equal_tuning_gives_every_variant_trials_per_knob(tmp_path, local_ray):
    cfg = make(tmp_path, "tune=true", "tuning.trials_per_knob=1", "tuning.seeds=[100,101]")
    paths = kdcore.run_job(cfg, "tuned", print)
    assert "-fair-tuned-" in paths[0].parent.name
    table = paths[0].read_text()
    assert (
        "## Equal tuning" in table
        and "its configured settings and 1 random-search samples per knob" in table
    )
    section = table[table.index("## Equal tuning") :]
    # the baseline has 1 knob (lr), pmd 3 (lr, weight, temperature), and each has its
    # configured settings as a sample too
    assert "| baseline  |       1 |        2 |" in section
    assert "| pmd       |       3 |        4 |" in section
    assert "kd.weights.pmd=" in section and "kd.pmd_temperature=" in section
    assert "tuning val - grid test (pts)" in section
    # the samples are in the trial store and the table folder: a grid with another
    # variant list trains only the samples of its new variant
    stored = read_entries(paths[0].parent / STORE_NAME)
    assert sum(key.endswith("-val") for key in stored) == (2 + 4) * 2
    lines = []
    kdcore.run_job(
        make(
            tmp_path,
            "tune=true",
            "tuning.trials_per_knob=1",
            "tuning.seeds=[100,101]",
            "variants=[baseline,pmd,enc]",
        ),
        "tuned again",
        lines.append,
    )
    assert any("12 reused from the trial store, 8 to train" in line for line in lines), lines


def test_a_relative_work_dir_is_shared_by_every_trial(tmp_path, local_ray, monkeypatch):
    """Ray Tune runs each trial in a folder of its own: a relative work_dir must still
    name the driver's folder, where the data and the teacher are."""
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(
        [
            "profile=smoke",
            "variants=[pmd]",
            "seeds=[0]",
            "work_dir=w",
            "results_dir=r",
        ]
    )
    paths = kdcore.run_job(cfg, "relative", print)
    assert paths[0].is_file() and len(list((tmp_path / "w" / "data").iterdir())) == 1
    assert "work_dir: w\n" in paths[0].read_text()  # the config as given


def test_a_t2_teacher_trains_caches_its_taps_and_distils(tmp_path, local_ray):
    lines = []
    cfg = make(tmp_path, "teacher.arch=t2", "kd.teacher_cache=true")
    paths = kdcore.run_job(cfg, "t2", lines.append)
    assert any("teacher: training T2(w2,h32,L2)" in line for line in lines)
    assert any("teacher outputs: caching" in line for line in lines)
    trials = pd.read_csv(paths[1])
    assert list(trials["variant"]) == ["baseline", "pmd"] and trials["dice"].notna().all()
    assert "Teacher: T2(w2,h32,L2)" in paths[0].read_text()


def test_every_number_of_a_job_reaches_mlflow_and_tensorboard(tmp_path, local_ray):
    from mlflow.tracking import MlflowClient

    from kdcore.tracking import tensorboard_scalars

    cfg = make(tmp_path, "tracking.mlflow=true")
    paths = kdcore.run_job(cfg, "tracked", [].append)
    client = MlflowClient(tracking_uri=(tmp_path / "work" / "mlruns").as_uri())
    runs = client.search_runs(client.search_experiments()[0].experiment_id.split())
    by_name = {r.info.run_name: r for r in runs}
    job = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == job.info.run_id]
    names = sorted(r.info.run_name for r in children)
    assert len(runs) == 4 and len(children) == 3, sorted(by_name)
    assert names[0].startswith("teacher") and names[1:] == [
        "trial  baseline seed 0",
        "trial  pmd seed 0",
    ]
    steps = cfg.budget.steps  # smoke: 2 steps per pass, validated after each
    trial = by_name["trial  pmd seed 0"]
    history = client.get_metric_history(trial.info.run_id, "loss_pmd")
    assert [m.step for m in history] == list(range(2, steps + 1, 2))
    assert trial.data.params["variant"] == "pmd"
    trials = pd.read_csv(paths[1])
    final = client.get_metric_history(trial.info.run_id, "final_dice")[0].value
    assert final == pytest.approx(trials.set_index("variant").loc["pmd", "dice"])
    teacher = next(r for r in children if r.info.run_name.startswith("teacher"))
    assert len(client.get_metric_history(teacher.info.run_id, "val_dice")) == 6  # smoke epochs
    assert "dice/baseline" in job.data.metrics
    artifacts = [a.path for a in client.list_artifacts(job.info.run_id, "table")]
    assert "table/table.md" in artifacts
    # TensorBoard: the trial's event files in its own folder, one value per epoch
    events = list((tmp_path / "work" / "ray").rglob("metrics"))
    scalars = [tensorboard_scalars(folder) for folder in events]
    assert any(len(s.get("val_dice", [])) == steps // 2 for s in scalars), scalars


def test_the_examples_of_a_grid_with_a_teacher_axis_show_every_variant(tmp_path, local_ray):
    from kdcore.table_folder import read_examples

    axis = "+axes={teacher:[{label:T1,teacher.arch:t1},{label:T2,teacher.arch:t2}]}"
    paths = kdcore.run_job(make(tmp_path, axis), "teacher axis", [].append)
    examples = read_examples(paths[0].parent / "examples.npz")
    assert list(examples["predictions"]) == ["teacher", "baseline", "pmd"]
    assert examples["cell"] == {"teacher": "T1"}
    assert list(pd.read_csv(paths[1])["teacher"]) == ["T1", "T1", "T2", "T2"]


def test_a_grid_trains_only_the_trials_no_earlier_grid_finished(tmp_path, local_ray):
    lines = []
    first = kdcore.run_job(make(tmp_path), "first", lines.append)
    assert "grid: 2 trials: 0 reused from the trial store" in "\n".join(lines)
    # its trials, carried in the table folder, are reused by a store on another disk
    other = tmp_path / "elsewhere"
    done = run_store(str(first[0].parent), f"work_dir={other}")
    assert done.returncode == 0 and "2 of 2 trials added" in done.stdout, done.stderr
    lines.clear()
    again = kdcore.run_job(
        make(tmp_path, f"work_dir={other}", f"results_dir={other / 'results'}"),
        "again",
        lines.append,
    )
    assert "grid: 2 trials: 2 reused from the trial store" in "\n".join(lines)
    assert pd.read_csv(again[1])["dice"].tolist() == pd.read_csv(first[1])["dice"].tolist()
    lines.clear()
    # more seeds, and the KD row under another label: only seed 1 is new
    second = kdcore.run_job(
        make(tmp_path, "seeds=[0,1]", "variants=[baseline,'kd:pmd']"), "second", lines.append
    )
    assert "grid: 4 trials: 2 reused from the trial store" in "\n".join(lines)
    a, b = pd.read_csv(first[1]), pd.read_csv(second[1])
    assert list(b["variant"]) == ["baseline", "baseline", "kd", "kd"]
    assert list(b["reused"]) == [True, False, True, False]
    reused = b[b["reused"]].set_index("seed")
    for column in ("dice", "val_dice", "best_step", "trained", "machine"):
        assert list(reused[column]) == list(a[column])
    table = second[0].read_text()
    assert "- Trials: 2 trained for this table, 2 reused from the trial store" in table
    assert "- Machine: " in table and "learning_curves.png" in table
    # a setting a trial depends on makes new trials (not the convergence rule: that is
    # judged again on the stored history)
    lines.clear()
    kdcore.run_job(make(tmp_path, "budget.convergence.tolerance=50"), "third", lines.append)
    assert "grid: 2 trials: 2 reused" in "\n".join(lines)
    lines.clear()
    kdcore.run_job(make(tmp_path, "student.fit.lr=0.001"), "fourth", lines.append)
    assert "grid: 2 trials: 0 reused" in "\n".join(lines)

"""The tracker and its sinks: console lines, TensorBoard event files read back, MLflow runs
read back through MlflowClient (nested children, one of them made in another process from
its parent's id), names made legal, and bad settings refused with one clear error."""

import multiprocessing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kdcore import tracking
from kdcore.errors import ConfigError
from kdcore.gate import check_config
from kdcore.settings import compose_config
from kdcore.tracking import (
    Tracker,
    flat_params,
    legal_name,
    tensorboard_scalars,
)


def config(work_dir: Path, **settings) -> dict:
    """The two sections a tracker reads, TensorBoard and MLflow off unless set."""
    section = {"tensorboard": False, "mlflow": False, "uri": None, "experiment": "kdbench"}
    return {"work_dir": str(work_dir), "tracking": {**section, **settings}}


def mlflow_client(work_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=(work_dir / "mlruns").as_uri())


def test_legal_names_for_tensorboard_and_mlflow():
    assert legal_name("loss_mse@enc") == "loss_mse_at_enc"
    assert legal_name("kd.weights.mse@bottleneck") == "kd.weights.mse_at_bottleneck"
    assert legal_name("val dice:3d") == "val_dice_3d"
    assert legal_name("/train//loss/./seg/") == "train/loss/seg"
    assert legal_name("val_dice") == "val_dice"
    with pytest.raises(ValueError, match="cannot be a metric or param name"):
        legal_name("/./")


def test_nested_params_become_dotted_text():
    params = OmegaConf.create(
        {"student": {"fit": {"lr": 1e-3, "betas": [0.9, 0.999]}}, "axes": None, "name": "s1"}
    )
    assert flat_params(params) == {
        "student.fit.lr": "0.001",
        "student.fit.betas": "[0.9, 0.999]",
        "axes": "null",
        "name": "s1",
    }


def test_console_sink_prints_the_lines_and_nothing_else(tmp_path):
    lines = []
    tracker = Tracker.from_config(config(tmp_path), lines.append)
    with tracker.run("job", {"seed": 0}) as job:
        job.line("epoch 1/2  loss 0.50  val dice 0.700")
        job.log_metrics({"loss": 0.5}, step=1)
        with job.child("trial") as trial:
            trial.line("epoch 1/1  loss 0.40")
    assert lines == ["epoch 1/2  loss 0.50  val dice 0.700", "epoch 1/1  loss 0.40"]
    assert not (tmp_path / "tensorboard").exists()  # TensorBoard off: no files


def test_tensorboard_files_hold_each_step_and_children_in_subfolders(tmp_path):
    tracker = Tracker.from_config(config(tmp_path, tensorboard=True), lambda _: None)
    with tracker.run("scales job") as job:
        assert job.folder.parent == tmp_path / "tensorboard"
        assert job.folder.name.startswith("scales_job-")
        for epoch in (1, 2, 3):
            job.log_metrics({"loss": 1.0 / epoch, "loss_mse@enc": 0.1 * epoch}, step=epoch)
        with job.child("baseline-seed0") as trial:
            trial.log_metrics({"val_dice": 0.25}, step=1)
        with job.child("quiet") as quiet:
            quiet.line("no numbers")
    assert trial.folder == job.folder / "baseline-seed0"
    scalars = tensorboard_scalars(job.folder)
    assert scalars["loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert [s for s, _ in scalars["loss_mse_at_enc"]] == [1, 2, 3]
    assert [v for _, v in scalars["loss_mse_at_enc"]] == pytest.approx([0.1, 0.2, 0.3])
    assert "val_dice" not in scalars  # the child's numbers are in its own folder
    assert tensorboard_scalars(trial.folder) == {"val_dice": [(1, 0.25)]}
    assert not quiet.folder.exists()  # a run that logs no numbers writes no files


def test_explicit_folder_and_bad_values(tmp_path):
    tracker = Tracker.from_config(config(tmp_path, tensorboard=True), lambda _: None)
    with tracker.run("trial", folder=tmp_path / "ray" / "trial_0") as run:
        run.log_metrics({"dice": 1}, step=0)
        with pytest.raises(ValueError, match="step must be an integer >= 0"):
            run.log_metrics({"dice": 0.5}, step=-1)
        with pytest.raises(ValueError, match="metric 'dice' must be a number"):
            run.log_metrics({"dice": "high"}, step=1)
        with pytest.raises(ValueError, match="'a@b' and 'a_at_b' both become 'a_at_b'"):
            run.log_metrics({"a@b": 1.0, "a_at_b": 2.0}, step=1)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            run.log_artifact(tmp_path / "missing.md")
    assert tensorboard_scalars(tmp_path / "ray" / "trial_0") == {"dice": [(0, 1.0)]}
    with pytest.raises(RuntimeError, match="has ended"):
        run.log_metrics({"dice": 0.5}, step=2)


def _trial_in_another_process(cfg: dict, parent_id: str, folder: str) -> str:
    """What a Ray worker does: a tracker of its own from the config, a child of the id."""
    tracker = Tracker.from_config(cfg, print)
    with tracker.run("kd-seed1", {"variant": "kd", "seed": 1}, parent=parent_id, folder=folder):
        pass
    run = tracker.run("kd-seed1-epochs", parent=parent_id, folder=folder)
    for epoch in (1, 2):
        run.log_metrics({"val_dice": 0.5 + 0.1 * epoch}, step=epoch)
    run.end()
    return run.id


@pytest.mark.skipif(not tracking.installed("mlflow"), reason=tracking.MLFLOW_INSTALL)
def test_mlflow_runs_nest_and_read_back_with_a_child_from_another_process(tmp_path):
    cfg = config(tmp_path, mlflow=True, tensorboard=True)
    tracker = Tracker.from_config(cfg, lambda _: None)
    table = tmp_path / "table.md"
    table.write_text("| variant | dice |\n|---|---|\n| baseline | 0.80 |\n")
    with tracker.run("scales", {"student": {"width": 16}, "kd.weights.mse@enc": 0.1}) as job:
        with job.child("baseline-seed0", {"variant": "baseline", "seed": 0}) as trial:
            for epoch in (1, 2, 3):
                trial.log_metrics({"loss": 1.0 / epoch, "loss_at@dec": 0.2}, step=epoch)
            trial.line("epoch 3/3  loss 0.33")
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter, as a Ray worker
        with spawn.Pool(1) as pool:
            remote_id = pool.apply(
                _trial_in_another_process, (cfg, job.id, str(tmp_path / "ray" / "kd-seed1"))
            )
        job.log_artifact(table)
        job.log_artifact(table, folder="tables/scales")
    with pytest.raises(RuntimeError, match="diverged"), tracker.run("broken"):
        raise RuntimeError("diverged")

    client = mlflow_client(tmp_path)
    experiment = client.get_experiment_by_name("kdbench")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"scales", "baseline-seed0", "kd-seed1", "kd-seed1-epochs", "broken"}
    parent = runs["scales"]
    assert parent.info.run_id == job.id and parent.info.status == "FINISHED"
    assert parent.data.params == {"student.width": "16", "kd.weights.mse_at_enc": "0.1"}
    assert "mlflow.parentRunId" not in parent.data.tags
    for name in ("baseline-seed0", "kd-seed1", "kd-seed1-epochs"):
        assert runs[name].data.tags["mlflow.parentRunId"] == job.id
        assert runs[name].info.status == "FINISHED"
    assert runs["kd-seed1-epochs"].info.run_id == remote_id
    assert runs["kd-seed1"].data.params == {"variant": "kd", "seed": "1"}
    assert runs["broken"].info.status == "FAILED"

    history = client.get_metric_history(trial.id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert [m.step for m in client.get_metric_history(trial.id, "loss_at_at_dec")] == [1, 2, 3]
    remote = client.get_metric_history(remote_id, "val_dice")
    assert [(m.step, m.value) for m in remote] == [(1, 0.6), (2, pytest.approx(0.7))]

    artifacts = {a.path for a in client.list_artifacts(job.id)}
    assert {"table.md", "tables"} <= artifacts
    assert [a.path for a in client.list_artifacts(job.id, "tables/scales")] == [
        "tables/scales/table.md"
    ]
    local = Path(client.download_artifacts(job.id, "table.md", str(tmp_path / "down")))
    assert local.read_text() == table.read_text()
    log = Path(client.download_artifacts(trial.id, "log.txt", str(tmp_path / "down")))
    assert log.read_text() == "epoch 3/3  loss 0.33\n"
    # the same numbers reached TensorBoard, the remote trial's in its Ray folder
    assert tensorboard_scalars(trial.folder)["loss"][-1] == (3, pytest.approx(1 / 3))
    remote_scalars = tensorboard_scalars(tmp_path / "ray" / "kd-seed1")
    assert remote_scalars["val_dice"][0] == (1, pytest.approx(0.6))  # float32 in TensorBoard


@pytest.mark.skipif(not tracking.installed("mlflow"), reason=tracking.MLFLOW_INSTALL)
def test_a_parent_id_mlflow_does_not_know_is_refused(tmp_path):
    tracker = Tracker.from_config(config(tmp_path, mlflow=True), lambda _: None)
    with pytest.raises(ConfigError, match="is not an MLflow run"):
        tracker.run("trial", parent="0123456789abcdef0123456789abcdef")


def test_mlflow_missing_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "installed", lambda package: False)
    with pytest.raises(ConfigError, match=r"tracking.mlflow must be false, or true with MLflow"):
        Tracker.from_config(config(tmp_path, mlflow=True))
    with pytest.raises(ConfigError, match=r"pip install -e '.\[mlflow\]'"):
        tracking.MlflowSink(None, "kdbench", tmp_path)


def test_sql_store_without_sqlalchemy_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "installed", lambda package: package != "sqlalchemy")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(ConfigError, match="needs the full MLflow package"):
        Tracker.from_config(config(tmp_path, mlflow=True, uri=uri))


def make(*overrides: str):
    return compose_config(list(overrides))


def test_the_gate_refuses_bad_tracking_settings(monkeypatch):
    check_config(make(), outside=False)
    with pytest.raises(ConfigError, match="tracking.uri must be null"):
        check_config(make("tracking.uri=mlruns"), outside=False)
    with pytest.raises(ConfigError, match="tracking.tensorboard must be true or false"):
        check_config(make("tracking.tensorboard=yes"), outside=False)
    monkeypatch.setattr(tracking, "installed", lambda package: False)
    with pytest.raises(ConfigError, match=r"tracking.mlflow must be false, or true with MLflow"):
        check_config(make("tracking.mlflow=true"), outside=False)

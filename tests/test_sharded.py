"""The teacher on 2 gloo workers (DeepSpeed inside Ray Train), checked against the
single-process teacher: the ZeRO-3 output cache, what each rank holds, and training."""

import numpy as np
import pandas as pd
import pytest
import ray
import torch

import kdcore
from kdcore.data.batches import rank_share
from kdcore.data.prepare import prepare_data
from kdcore.models import build_teacher, count_parameters, teacher_network
from kdcore.settings import absolute_paths, with_settings
from kdcore.teacher import (
    freeze,
    train_teacher,
    write_outputs_on_workers,
    write_teacher_outputs,
)
from kdcore.teacher_cache import TeacherOutputs
from tests.conftest import smoke_config

pytestmark = pytest.mark.slow


def make(tmp_path, *overrides: str):
    cfg = smoke_config(tmp_path, "teacher.workers=2", *overrides)
    return absolute_paths(cfg)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def test_rank_shares_cover_every_index_once():
    idx = np.arange(11)
    shares = [rank_share(idx, r, 3) for r in range(3)]
    assert [len(s) for s in shares] == [4, 4, 3]
    assert np.array_equal(np.concatenate(shares), idx)


@pytest.mark.parametrize("arch", ["t1", "t2"])
def test_sharded_output_cache_equals_the_single_process_cache(tmp_path, local_ray, arch):
    cfg = make(tmp_path, f"teacher.arch={arch}")
    data, _ = prepare_data(cfg, print)
    torch.manual_seed(0)
    weights = teacher_network(cfg).state_dict()
    single = freeze(teacher_network(cfg))
    single.load_state_dict(weights)
    write_teacher_outputs(single, data, tmp_path / "one")
    run = write_outputs_on_workers(cfg, weights, data, tmp_path / "two", print)
    one, two = TeacherOutputs(tmp_path / "one", data), TeacherOutputs(tmp_path / "two", data)
    idx = np.arange(len(data))
    for name, tensor in one(idx).items():
        assert torch.allclose(two(idx)[name], tensor, rtol=1e-3, atol=1e-3), name
    # each rank holds half of the parameters (measured from its ZeRO-3 shards)
    total = count_parameters(single)
    held = [r["held"] for r in run["ranks"]]
    assert sum(held) >= total and all(abs(h - total / 2) <= 0.01 * total for h in held)
    assert [r["slices"] for r in run["ranks"]] == [len(s) for s in np.array_split(idx, 2)]


def test_two_worker_training_follows_the_single_process_loss_curve(tmp_path, local_ray):
    cfg = make(tmp_path, "teacher.fit.epochs=4")
    data, splits = prepare_data(cfg, print)
    one_process = train_teacher(with_settings(cfg, {"teacher.workers": 1}), data, splits, print)
    run = train_teacher(cfg, data, splits, print)
    one = np.array([h["train_loss"] for h in one_process.state.history])
    two = np.array([h["train_loss"] for h in run.state.history])
    # the same global batches; each rank's batch Dice and BatchNorm statistics are taken
    # on its half, so the curves agree closely but not exactly (measured: 0.08% at most)
    assert np.abs(two / one - 1).max() < 0.01
    assert run.state.best_epoch in range(1, 5) and 0 <= run.state.best_val <= 1
    total = count_parameters(build_teacher(cfg.teacher.width, cfg.teacher.depth))
    assert all(abs(h - total / 2) <= 0.01 * total for h in run.held)  # ZeRO-3: half each
    teacher = build_teacher(cfg.teacher.width, cfg.teacher.depth)
    teacher.load_state_dict(run.weights)  # a consolidated plain state dict


def test_a_job_with_a_two_worker_teacher_writes_its_table(tmp_path, local_ray):
    lines = []
    cfg = make(tmp_path, "variants=[baseline,pmd]", "seeds=[0]", "kd.teacher_cache=true")
    paths = kdcore.run_job(cfg, "two workers", lines.append)
    trials = pd.read_csv(paths[1])
    assert list(trials["variant"]) == ["baseline", "pmd"] and trials["dice"].notna().all()
    assert any("ZeRO-3 over 2 workers" in line for line in lines)


def test_a_kd_trial_spans_two_workers_when_the_teacher_is_live(tmp_path, local_ray):
    # no cache: each trial runs on 2 workers, the teacher sharded, the student data-parallel
    cfg = make(tmp_path, "variants=[baseline,pmd]", "seeds=[0]", "kd.teacher_cache=false")
    paths = kdcore.run_job(cfg, "two-worker trials", [].append)
    trials = pd.read_csv(paths[1])
    assert list(trials["variant"]) == ["baseline", "pmd"] and trials["dice"].notna().all()
    history = pd.read_csv(paths[0].parent / "history" / "pmd-seed0.csv")
    assert list(history["step"]) == [2, 4, 6, 8] and history["loss_pmd"].notna().all()

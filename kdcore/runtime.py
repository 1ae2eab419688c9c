"""Where work runs: the Ray connection, the storage of runs and checkpoints, and jobs of
several workers (Ray Train), with the one decision of whether the teacher spans them.

A fresh local Ray by default; an existing cluster when ``ray.address`` (or RAY_ADDRESS)
names one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from omegaconf import DictConfig
from ray.train import RunConfig, ScalingConfig, get_context
from ray.train.torch import TorchTrainer

from kdcore.errors import ConfigError, NonFiniteLossError
from kdcore.progress import Log


def sharded_teacher(cfg: DictConfig) -> bool:
    """Whether the teacher spans ``teacher.workers`` workers (trained and run by
    DeepSpeed), rather than one process."""
    return cfg.teacher.workers > 1


def sharded_trials(cfg: DictConfig) -> bool:
    """Whether each grid trial spans ``teacher.workers`` workers: the teacher is sharded
    and the cache (which needs no live teacher) is off. Every trial then does, baselines
    included, so that a baseline and its KD runs differ only in the KD terms."""
    return sharded_teacher(cfg) and not cfg.kd.teacher_cache


def connect(cfg: DictConfig, log: Log = print) -> None:
    """Join the cluster named by ray.address / RAY_ADDRESS, or start a fresh local Ray.

    A fresh local Ray (``address="local"``) ignores a stale ``ray_current_cluster`` file
    left by an uncleanly stopped ``ray start``.
    """
    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        log(f"ray: connecting to {address}")
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(
            address="local",
            include_dashboard=False,
            object_store_memory=256 * 1024**2,  # trials share files, not objects
            configure_logging=False,
        )
    have = ray.cluster_resources()
    log(f"ray: {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs")
    if cfg.ray.gpus_per_trial > have.get("GPU", 0):
        raise ConfigError(
            f"ray.gpus_per_trial={cfg.ray.gpus_per_trial} but the Ray cluster has "
            f"{have.get('GPU', 0):g} GPUs: set ray.gpus_per_trial=0 to train on CPU"
        )
    if cfg.ray.cpus_per_trial > have.get("CPU", 0):
        raise ConfigError(
            f"ray.cpus_per_trial={cfg.ray.cpus_per_trial} but the Ray cluster has "
            f"{have.get('CPU', 0):g} CPUs"
        )


def storage_root(cfg: DictConfig) -> str:
    """Where Ray keeps runs and trial checkpoints: ``ray.storage`` (a path every node
    shares, or a URI such as s3://bucket/kd), else ``<work_dir>/ray`` (one machine)."""
    if cfg.ray.storage:
        if "://" in cfg.ray.storage:
            return cfg.ray.storage.rstrip("/")
        return str(Path(cfg.ray.storage).absolute())
    return str(Path(cfg.work_dir).absolute() / "ray")


def parallel_slots(cfg: DictConfig) -> int:
    """How many trials the connected Ray cluster runs at once (1 when Ray was not
    started: every trial of the grid came from the trial store)."""
    if not ray.is_initialized():
        return 1
    have = ray.cluster_resources()
    workers = cfg.teacher.workers if sharded_trials(cfg) else 1  # a trial's workers
    slots = int(have.get("CPU", 0) // (cfg.ray.cpus_per_trial * workers))
    if cfg.ray.gpus_per_trial:
        slots = min(slots, int(have.get("GPU", 0) // (cfg.ray.gpus_per_trial * workers)))
    return max(1, min(slots, cfg.ray.max_concurrent_trials or slots))


def uses_gpu(cfg: DictConfig) -> bool:
    """Whether the run trains on CUDA (``device=cuda``, or ``auto`` with a GPU here)."""
    return cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())


def run_on_workers(
    loop: Callable[[dict], None], config: dict[str, Any], cfg: DictConfig, name: str
) -> Any:
    """Run ``loop(config)`` on ``teacher.workers`` Ray Train workers (gloo on CPU; NCCL and
    one GPU each on CUDA) and return the Ray Train result. A worker's error is re-raised
    as what it was (e.g. a non-finite loss) rather than as Ray's wrapper."""
    use_gpu = uses_gpu(cfg)
    have = ray.cluster_resources()
    need = {
        "CPU": cfg.teacher.workers * cfg.ray.cpus_per_trial,
        "GPU": cfg.teacher.workers * use_gpu,
    }
    short = [
        f"{need[k]:g} {k}s (it has {have.get(k, 0):g})" for k in need if need[k] > have.get(k, 0)
    ]
    if short:
        raise ConfigError(
            f"teacher.workers={cfg.teacher.workers} needs "
            + " and ".join(short)
            + " in the Ray cluster: lower teacher.workers or ray.cpus_per_trial"
        )
    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=cfg.teacher.workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cfg.ray.cpus_per_trial},
        ),
        run_config=RunConfig(name=name, storage_path=storage_root(cfg)),
    )
    try:
        return trainer.fit()
    except Exception as err:  # Ray wraps worker errors; keep the worker's message
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, NonFiniteLossError) or "NonFiniteLossError" in str(err):
            raise NonFiniteLossError(str(cause).strip().splitlines()[-1]) from None
        raise


def worker_rank() -> tuple[int, int]:
    """(rank, world size) of this Ray Train worker."""
    ctx = get_context()
    return ctx.get_world_rank(), ctx.get_world_size()

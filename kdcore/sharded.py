"""The teacher on several workers: DeepSpeed engines inside a Ray Train job.

With ``teacher.workers = N > 1`` (1, the default, keeps the single-process path):

- ``train_teacher_sharded``: a Ray Train ``TorchTrainer`` with N workers (gloo on CPU, NCCL
  on GPU). Each worker wraps the teacher in a DeepSpeed engine with ZeRO stage
  ``teacher.zero_stage`` (0-3; bf16 on GPU) and trains on its share of every global batch,
  the same batches as one process would see. The checkpoint chosen on validation comes
  back as a consolidated plain state dict for the keyed teacher cache.
- ``write_teacher_outputs_sharded``: the frozen teacher sharded with ZeRO stage 3, each
  worker holding about 1/N of its parameters and computing the taps of its share of the
  slices into the teacher-output cache.

Worker files travel through Ray Train's checkpoints (merged into one folder under
``ray.storage``), so the workers may run on other nodes than the driver.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from kdcore.config import as_dict
from kdcore.data.batches import batches, rank_share, to_tensors
from kdcore.data.slices import SliceData
from kdcore.data.splits import Splits
from kdcore.errors import NonFiniteLossError
from kdcore.io import atomic_dir
from kdcore.progress import Log


def zero_config(stage: int, micro_batch: int, bf16: bool) -> dict[str, Any]:
    """A DeepSpeed config for ZeRO ``stage`` (0-3) with the optimiser given in code.

    ``stage3_param_persistence_threshold: 0`` shards every tensor, however small (the
    default keeps tensors under 1e5 elements whole on every rank).
    """
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def _trainer(loop, config: dict, cfg: DictConfig, name: str):
    """A TorchTrainer of ``teacher.workers`` workers (one GPU each when the run is on CUDA)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from kdcore.errors import ConfigError
    from kdcore.grid import storage_root

    use_gpu = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
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
    return TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=cfg.teacher.workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cfg.ray.cpus_per_trial},
        ),
        run_config=RunConfig(name=name, storage_path=storage_root(cfg)),
    )


def _fit_trainer(trainer) -> Any:
    """Run a TorchTrainer; a worker's error is re-raised as what it was (e.g. a non-finite
    loss) rather than as Ray's wrapper."""
    try:
        return trainer.fit()
    except Exception as err:  # Ray wraps worker errors; keep the worker's message
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, NonFiniteLossError) or "NonFiniteLossError" in str(err):
            raise NonFiniteLossError(str(cause).strip().splitlines()[-1]) from None
        raise


# ---- training -----------------------------------------------------------------------


def train_teacher_sharded(
    cfg: DictConfig, data: SliceData, splits: Splits, name: str, log: Log
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Train the teacher on ``teacher.workers`` DeepSpeed workers; return the weights of
    the epoch chosen on validation Dice (a consolidated plain state dict on CPU) and the
    run's summary (``best_epoch``, ``best_val``, ``history``, ``held`` per rank)."""
    import ray

    from kdcore.grid import connect

    connect(cfg, log)
    log(
        f"teacher: training {name} on {len(splits.train)} slices for "
        f"{cfg.teacher.fit.epochs} epochs on {cfg.teacher.workers} workers (DeepSpeed ZeRO "
        f"stage {cfg.teacher.zero_stage})"
    )
    config = {"cfg": as_dict(cfg), "data": ray.put(data), "splits": ray.put(splits)}
    run = f"teacher-{name}-{int(time.time())}"
    result = _fit_trainer(_trainer(_train_loop, config, cfg, run))
    with result.checkpoint.as_directory() as folder:
        weights = torch.load(Path(folder) / "model.pt", map_location="cpu", weights_only=True)
        summary = json.loads((Path(folder) / "summary.json").read_text())
        summary["held"] = [
            json.loads((Path(folder) / f"held-rank{r}.json").read_text())["held"]
            for r in range(cfg.teacher.workers)
        ]
    for h in summary["history"]:
        log(
            f"teacher epoch {h['epoch']}/{cfg.teacher.fit.epochs}: loss {h['train_loss']:.4f} "
            f"(seg {h['loss_seg']:.4f}, recon {h['loss_recon']:.4f}), val dice "
            f"{h['val_dice']:.4f} ({h['epoch_s']:.1f}s)"
        )
    return weights, summary


def _train_loop(config: dict) -> None:
    """One worker of ``train_teacher_sharded`` (runs in a Ray Train worker process)."""
    import deepspeed
    import ray
    import ray.train
    import torch.distributed as dist
    from omegaconf import OmegaConf
    from ray.train.torch import get_device

    from kdcore.losses import MultiTaskLoss
    from kdcore.teacher import teacher_network
    from kdcore.training import (
        FitSettings,
        _non_finite_message,
        build_optimizer,
        build_schedule,
        evaluate,
    )

    cfg = OmegaConf.create(config["cfg"])
    data: SliceData = ray.get(config["data"])
    splits: Splits = ray.get(config["splits"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = get_device()
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_trial)))
    settings = FitSettings(**as_dict(cfg.teacher.fit))
    stage = cfg.teacher.zero_stage
    ds_config = zero_config(stage, settings.batch_size, device.type == "cuda")

    torch.manual_seed(cfg.teacher.seed)  # every rank builds the same initial teacher
    with deepspeed.zero.Init(config_dict_or_path=ds_config, enabled=stage == 3):
        model = teacher_network(cfg)
    model = model.to(device)
    optimizer = build_optimizer(list(model.parameters()), settings)
    schedule = build_schedule(optimizer, settings, splits.train)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=schedule, config=ds_config
    )
    objective = MultiTaskLoss(cfg.teacher.seg_loss, cfg.teacher.recon_weight)
    best: dict[str, Any] = {"val": -1.0, "epoch": -1, "weights": None}
    history = []
    for epoch in range(settings.epochs):
        start = time.perf_counter()
        engine.train()
        rng = np.random.default_rng([cfg.teacher.seed, epoch])  # as ``fit``: same batches
        sums = torch.zeros(4, dtype=torch.float64)  # samples, loss, seg, recon
        for idx in batches(splits.train, settings.batch_size, rng):
            share = rank_share(idx, rank, world)
            # every rank must run each step (ZeRO gathers and reduces collectively): a
            # rank without samples runs one with weight 0
            x, y = to_tensors(data, share if len(share) else idx[:1], device)
            loss, parts = objective(engine(x), x, y)
            # DeepSpeed averages gradients over ranks: weighting each rank's mean loss by
            # world * its share makes the step that of the global batch's mean (up to
            # the batch Dice and BatchNorm statistics, which each rank takes on its share)
            weight = world * len(share) / len(idx)
            engine.backward(loss * weight)
            engine.step()
            sums += torch.tensor(
                [
                    len(share),
                    *(len(share) * v.item() for v in (loss.detach(), parts["seg"], parts["recon"])),
                ],
                dtype=torch.float64,
            )
        dist.all_reduce(sums)
        n = float(sums[0])
        h = {
            "epoch": epoch + 1,
            "train_loss": float(sums[1]) / n,
            "loss_seg": float(sums[2]) / n,
            "loss_recon": float(sums[3]) / n,
        }
        if not math.isfinite(h["train_loss"]):
            raise NonFiniteLossError(_non_finite_message(f"teacher (rank {rank})", epoch + 1, h))
        h["train_s"] = time.perf_counter() - start
        weights = _full_state_dict(engine, stage)  # collective: every rank takes part
        if rank == 0:
            plain = teacher_network(cfg)
            plain.load_state_dict(weights)
            h["val_dice"] = evaluate(plain.to(device), data, splits.val)["dice"]
            if h["val_dice"] > best["val"]:
                best = {"val": h["val_dice"], "epoch": epoch + 1, "weights": weights}
        h["epoch_s"] = time.perf_counter() - start
        history.append(h)
    held = _held_parameters(model, stage)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / f"held-rank{rank}.json").write_text(json.dumps({"held": held}))
        if rank == 0:
            torch.save(best["weights"], Path(folder) / "model.pt")
            summary = {"best_epoch": best["epoch"], "best_val": best["val"], "history": history}
            (Path(folder) / "summary.json").write_text(json.dumps(summary))
        ray.train.report(
            {"epoch": settings.epochs}, checkpoint=ray.train.Checkpoint.from_directory(folder)
        )


def _full_state_dict(engine, stage: int) -> dict[str, Tensor]:
    """The whole model's state dict on CPU (gathered from every rank under ZeRO-3).

    Under ZeRO-3 a bare ``state_dict()`` holds empty shards, so the parameters are
    gathered first; every rank must call this.
    """
    import deepspeed

    module = engine.module
    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=stage == 3):
        return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def _rss_bytes() -> int:
    """This process's resident memory now (Linux)."""
    import os

    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _held_parameters(model: torch.nn.Module, stage: int) -> int:
    """Parameter elements this rank holds (its ZeRO-3 shards, else every parameter)."""
    if stage == 3:
        return sum(p.ds_tensor.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


# ---- the sharded frozen teacher: the output cache -------------------------------------


def write_teacher_outputs_sharded(
    cfg: DictConfig,
    weights: dict[str, Tensor],
    data: SliceData,
    folder: Path,
    log: Log,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Fill the teacher-output cache in ``folder`` (as ``write_teacher_outputs``) with the
    frozen teacher sharded by ZeRO stage 3 over ``teacher.workers`` workers, each computing
    the taps of its share of the slices. Returns what each rank held and how long it took.
    """
    import ray

    from kdcore.grid import connect
    from kdcore.teacher import TAPS

    connect(cfg, log)
    config = {
        "cfg": as_dict(cfg),
        "weights": ray.put(weights),  # for rank 0; the others need only the buffers
        "buffers": ray.put({k: weights[k] for k in buffer_names(cfg)}),
        "images": ray.put(np.asarray(data.images)),
        "batch_size": batch_size,
    }
    start = time.perf_counter()
    run = f"teacher-outputs-{folder.parent.name}-{int(time.time())}"
    result = _fit_trainer(_trainer(_outputs_loop, config, cfg, run))
    n = len(data)
    report: dict[str, Any] = {"workers": cfg.teacher.workers, "ranks": []}
    with result.checkpoint.as_directory() as shards, atomic_dir(folder) as tmp:
        arrays = {}
        for rank in range(cfg.teacher.workers):
            part = np.load(Path(shards) / f"taps-rank{rank}.npz")
            report["ranks"].append(json.loads((Path(shards) / f"rank{rank}.json").read_text()))
            idx = part["idx"]
            for name in TAPS:
                if name not in arrays:
                    shape = (n, *part[name].shape[1:])
                    arrays[name] = np.lib.format.open_memmap(
                        tmp / f"{name}.npy", mode="w+", dtype=np.float16, shape=shape
                    )
                arrays[name][idx] = part[name]
        for array in arrays.values():
            array.flush()
        per_slice = sum(a[0].nbytes for a in arrays.values())
        meta = {"data": data.key, "slices": n, "bytes_per_slice": per_slice}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    report["wall_s"] = time.perf_counter() - start
    return report


def sharded_frozen_teacher(
    cfg: DictConfig, weights: dict[str, Tensor] | None, device: torch.device
) -> Any:
    """The frozen teacher as a DeepSpeed ZeRO-3 engine: built sharded (``zero.Init``),
    loaded one module at a time from rank 0's ``weights`` (other ranks may pass only the
    buffers), frozen. Call the returned engine (not its module) on every rank at once."""
    import deepspeed
    import torch.distributed as dist

    from kdcore.teacher import teacher_network

    ds_config = zero_config(3, 1, device.type == "cuda")
    with deepspeed.zero.Init(config_dict_or_path=ds_config):
        model = teacher_network(cfg)
    rank = dist.get_rank()
    # one module's parameters gathered at a time, written by rank 0: no rank ever holds
    # the whole teacher
    for prefix, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        with deepspeed.zero.GatheredParameters(list(own.values()), modifier_rank=0):
            if rank == 0:
                for key, param in own.items():
                    param.data.copy_(weights[f"{prefix}.{key}" if prefix else key])
    for key, buffer in model.named_buffers():  # BatchNorm statistics: whole on every rank
        buffer.copy_(weights[key])
    model.requires_grad_(False)
    engine, *_ = deepspeed.initialize(model=model.to(device), config=ds_config)
    engine.eval()  # (DeepSpeed's eval() returns None)
    return engine


def buffer_names(cfg: DictConfig) -> list[str]:
    """The teacher's buffers (BatchNorm statistics), found on the meta device (no memory)."""
    from kdcore.teacher import teacher_network

    with torch.device("meta"):
        teacher = teacher_network(cfg)
    return [name for name, _ in teacher.named_buffers()]


def sharded_taps(engine, x: Tensor) -> dict[str, Tensor]:
    """The sharded teacher's taps for ``x`` as float32 tensors (every rank at once).

    ``no_grad`` rather than ``inference_mode``: ZeRO-3 gathers and releases parameters
    in hooks around each module."""
    cuda = x.device.type == "cuda"
    with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16, enabled=cuda):
        taps = engine(x, with_recon=False)
    return {k: v.float().contiguous() for k, v in taps.items()}


# ---- trials spanning several workers ----------------------------------------------------


def sharded_trials(cfg: DictConfig) -> bool:
    """Whether each grid trial spans ``teacher.workers`` workers: the teacher is sharded
    and the cache (which needs no live teacher) is off. Every trial then does, baselines
    included, so that a baseline and its KD runs differ only in the KD terms."""
    return cfg.teacher.workers > 1 and not cfg.kd.teacher_cache


def run_sharded_trial(
    cfg: DictConfig, variant: str, seed: int, teachers: dict | None
) -> dict[str, Any]:
    """``kdcore.trial.run_trial`` on ``teacher.workers`` Ray Train workers: the student
    replicated and data-parallel, the teacher sharded by ZeRO-3. Returns rank 0's row."""
    import ray

    config = {
        "cfg": as_dict(cfg),
        "variant": variant,
        "seed": seed,
        "teachers": ray.put(teachers),
    }
    run = f"trial-{abs(hash((variant, seed, time.time()))):x}"
    result = _fit_trainer(_trainer(_trial_loop, config, cfg, run))
    with result.checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / "row.json").read_text())


def _trial_loop(config: dict) -> None:
    """One worker of ``run_sharded_trial``."""
    import ray
    import ray.train
    from omegaconf import OmegaConf

    from kdcore.trial import run_trial

    cfg = OmegaConf.create(config["cfg"])
    ctx = ray.train.get_context()
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_trial)))
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    teachers = ray.get(config["teachers"])
    row = run_trial(cfg, config["variant"], config["seed"], teachers, rank=rank, world=world)
    # Ray Train V2 keeps a report's metrics only with a checkpoint: the row travels as one
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            (Path(folder) / "row.json").write_text(json.dumps(row))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({}, checkpoint=checkpoint)


def _outputs_loop(config: dict) -> None:
    """One worker of ``write_teacher_outputs_sharded``."""
    import ray
    import ray.train
    from omegaconf import OmegaConf
    from ray.train.torch import get_device

    from kdcore.teacher import TAPS

    cfg = OmegaConf.create(config["cfg"])
    images = ray.get(config["images"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = get_device()
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_trial)))
    rss_start = _rss_bytes()
    weights = ray.get(config["weights"] if rank == 0 else config["buffers"])
    engine = sharded_frozen_teacher(cfg, weights, device)
    del weights
    mine = rank_share(np.arange(len(images)), rank, world)
    size = config["batch_size"]
    # every rank runs the same number of forward passes (each gathers the shards
    # collectively); a rank past its last slice repeats one and discards it
    steps = math.ceil(len(rank_share(np.arange(len(images)), 0, world)) / size)
    out: dict[str, list[np.ndarray]] = {name: [] for name in TAPS}
    start = time.perf_counter()
    for step in range(steps):
        idx = mine[step * size : (step + 1) * size]
        x = torch.from_numpy(np.asarray(images[idx if len(idx) else mine[:1]], np.float32))
        x = x[:, None].expand(-1, 3, -1, -1).to(device)
        with (
            torch.no_grad(),
            torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"),
        ):
            taps = engine(x, with_recon=False)
        if len(idx):
            for name in TAPS:
                out[name].append(taps[name].float().cpu().numpy().astype(np.float16))
    seconds = time.perf_counter() - start
    held = _held_parameters(engine.module, 3)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    with tempfile.TemporaryDirectory() as folder:
        np.savez(
            Path(folder) / f"taps-rank{rank}.npz",
            idx=mine,
            **{name: np.concatenate(v) for name, v in out.items()},
        )
        info = {
            "rank": rank,
            "held": held,
            "slices": len(mine),
            "seconds": seconds,
            "cuda_peak_bytes": peak,
            "rss_start_bytes": rss_start,
            "rss_peak_bytes": _peak_rss_bytes(),
        }
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps(info))
        ray.train.report(
            {"slices": len(mine)}, checkpoint=ray.train.Checkpoint.from_directory(folder)
        )

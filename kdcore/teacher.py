"""The teacher's whole life: trained once (or loaded from its keyed cache), frozen for
distillation, and optionally run once over every slice into the teacher-output cache
(``kdcore.teacher_cache``).

A teacher's folder under ``work_dir/teachers/`` is keyed by the teacher's config, the
data and the split, so any change to them trains a new teacher. It holds ``model.pt``
(a plain state dict, loaded with ``weights_only=True``), ``meta.json`` (test metrics,
parameters, wall time) and, with ``kd.teacher_cache``, ``outputs/`` (the taps).

With ``teacher.workers = N > 1`` the teacher trains as a Ray Train job of N DeepSpeed
engines (ZeRO stage ``teacher.zero_stage``; each worker trains on its share of every
global batch, the same batches one process would see) through the same ``fit`` as one
process, and fills the cache with the frozen teacher sharded by ZeRO-3. Worker files
travel through Ray Train's checkpoints, so the workers may run on other nodes.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import torch
from omegaconf import DictConfig, OmegaConf
from ray.train.torch import get_device
from torch import Tensor, nn

from kdcore.data.batches import batches, rank_share, to_tensors
from kdcore.data.slices import SliceData
from kdcore.data.splits import Splits
from kdcore.errors import DamagedCacheError
from kdcore.io import discard_dir, verified_dir, verify_dir
from kdcore.losses import MultiTaskLoss
from kdcore.models import TAPS, count_parameters, teacher_name, teacher_network, teacher_settings
from kdcore.models.teachers import network_channels
from kdcore.progress import Log, Progress
from kdcore.runtime import connect, run_on_workers, sharded_teacher, worker_rank
from kdcore.settings import as_dict, resolve_device, stable_hash
from kdcore.teacher_cache import TeacherOutputs, cache_problem, write_outputs
from kdcore.tracking import Run
from kdcore.training import FitSettings, FitState, evaluate, fit, model_device
from kdcore.zero import (
    DeepSpeedBackend,
    buffer_names,
    held_parameters,
    peak_rss_bytes,
    rss_bytes,
    sharded_frozen_teacher,
    sharded_taps,
    sharded_teacher_network,
)

TapsFn = Callable[[Tensor], dict[str, Tensor]]


@dataclass
class Teacher:
    """A trained teacher on disk: its folder (weights, metadata) and its metadata, with
    the weights already in memory when they were just trained or checked."""

    folder: Path
    meta: dict[str, Any]
    loaded: dict[str, Tensor] | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        """The weights file (a plain state dict)."""
        return self.folder / "model.pt"

    def weights(self) -> dict[str, Tensor]:
        """The state dict, loaded so that nothing in the file is executed."""
        return self.loaded if self.loaded is not None else load_weights(self.path)


@dataclass
class TeacherRun:
    """A finished training run: the chosen epoch's weights (a plain state dict on CPU),
    the fit state (history, chosen epoch, its validation Dice) and, on several workers,
    the parameter elements each rank held."""

    weights: dict[str, Tensor]
    state: FitState
    held: list[int] | None = None


def load_weights(path: Path) -> dict[str, Tensor]:
    """A teacher's state dict (``weights_only=True``: nothing in the file is executed)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_weights(weights: dict[str, Tensor], path: Path) -> None:
    """``torch.save`` of a state dict, serialised in memory and then written, so that a
    full disk is an OSError naming ``path`` (torch's own writer reports it as a
    RuntimeError about stream positions)."""
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    try:
        path.write_bytes(buffer.getbuffer())
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None


def teacher_dir(cfg: DictConfig, data: SliceData, splits: Splits) -> Path:
    """Cache folder of the teacher, keyed by its config, the data and the training split."""
    key = stable_hash(
        {
            "teacher": teacher_settings(cfg),
            "data": data.key,
            "train": splits.train.tolist(),
            "val": splits.val.tolist(),
        }
    )
    return Path(cfg.work_dir).absolute() / "teachers" / key


def teacher_epoch_line(h: dict[str, float], progress: str) -> str:
    """One teacher epoch as the console shows it."""
    return (
        f"teacher epoch {progress}: loss {h['train_loss']:.4f} (seg {h['loss_seg']:.4f}, "
        f"recon {h['loss_recon']:.4f}), val dice {h['val_dice']:.4f} ({h['epoch_s']:.1f}s)"
    )


def load_or_train_teacher(
    cfg: DictConfig, data: SliceData, splits: Splits, log: Log = print, track: Run | None = None
) -> Teacher:
    """The cached teacher for this config and data, trained first if there is none.

    The teacher trains on all training patients; its checkpoint is picked on validation.
    A teacher trained here is a run of its own under ``track`` (the job's run): its
    settings, every epoch's losses and validation Dice, and its test metrics.
    """
    folder = teacher_dir(cfg, data, splits)
    if folder.is_dir():
        try:
            teacher = _cached_teacher(cfg, folder)
            log(f"teacher: reusing {folder}")
            return teacher
        except DamagedCacheError as err:
            log(f"teacher: {err.rebuild_message()}: training it again")
            discard_dir(folder)
    start = time.perf_counter()
    run = train_teacher(cfg, data, splits, log)
    model = teacher_network(cfg)
    model.load_state_dict(run.weights)
    model = model.to(resolve_device(cfg.device))
    meta = {
        "name": teacher_name(cfg),
        "params": count_parameters(model),
        "config": as_dict(cfg.teacher),
        "best_epoch": run.state.best_epoch,
        "val_dice": run.state.best_val,
        "test": evaluate(model, data, splits.test),
        "wall_s": time.perf_counter() - start,
    }
    with verified_dir(folder) as tmp:  # model and metadata appear together, checksummed
        save_weights(run.weights, tmp / "model.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    log(f"teacher: test dice {meta['test']['dice']:.4f}, saved to {folder}")
    if track is not None:
        _track_teacher(track, cfg, run.state, meta)
    return Teacher(folder, meta, run.weights)


def _track_teacher(track: Run, cfg: DictConfig, state: FitState, meta: dict[str, Any]) -> None:
    """The teacher's run under the job's: settings, each epoch, test metrics."""
    with track.child(f"teacher {meta['name']}", teacher_settings(cfg)) as child:
        child.log_epochs(state.history)
        test = {f"test_{k}": v for k, v in meta["test"].items() if isinstance(v, int | float)}
        child.log_metrics(test, step=state.best_epoch)


def _cached_teacher(cfg: DictConfig, folder: Path) -> Teacher:
    """The teacher cached in ``folder``, checked against its manifest and loaded into the
    network of ``cfg``; DamagedCacheError when any of it is wrong."""
    verify_dir(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        weights = load_weights(folder / "model.pt")
        teacher_network(cfg).load_state_dict(weights)
    except (ValueError, RuntimeError, KeyError, OSError) as err:  # e.g. not a torch file
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DamagedCacheError(folder, "model.pt", f"cannot be loaded: {why[:200]}") from None
    return Teacher(folder, meta, weights)


def train_teacher(cfg: DictConfig, data: SliceData, splits: Splits, log: Log = print) -> TeacherRun:
    """Train a new teacher on the training patients, in this process or, with
    ``teacher.workers > 1``, on that many DeepSpeed workers; nothing is cached."""
    if sharded_teacher(cfg):
        return _train_on_workers(cfg, data, splits, teacher_name(cfg), log)
    return _train_here(cfg, data, splits, teacher_name(cfg), log)


def _fit_teacher(
    cfg: DictConfig,
    model: nn.Module,
    forward: Callable[[Tensor], dict[str, Tensor]],
    data: SliceData,
    splits: Splits,
    name: str,
    backend=None,
    on_epoch=None,
) -> FitState:
    """The teacher's training, whatever the backend: Dice+BCE (or the configured loss)
    plus the reconstruction term, checkpoint chosen on validation Dice."""
    objective = MultiTaskLoss(
        cfg.teacher.seg_loss, cfg.teacher.recon_weight, network_channels(cfg)[1]
    )
    return fit(
        model,
        lambda x, y, _idx: objective(forward(x), x, y),
        data,
        splits.train,
        splits.val,
        FitSettings(**as_dict(cfg.teacher.fit)),
        cfg.teacher.seed,
        on_epoch=on_epoch,
        name=f"teacher {name}",
        backend=backend,
    )


def _train_here(
    cfg: DictConfig, data: SliceData, splits: Splits, name: str, log: Log
) -> TeacherRun:
    """Train the teacher in this process."""
    torch.manual_seed(cfg.teacher.seed)
    model = teacher_network(cfg).to(resolve_device(cfg.device))
    epochs = cfg.teacher.fit.epochs
    log(
        f"teacher: training {name} ({count_parameters(model):,} params) on "
        f"{len(splits.train)} slices for {epochs} epochs"
    )
    progress = Progress(epochs)

    def on_epoch(state: FitState, _checkpoint: dict) -> None:
        log(teacher_epoch_line(state.history[-1], progress.advance()))

    state = _fit_teacher(cfg, model, model, data, splits, name, on_epoch=on_epoch)
    return TeacherRun({k: v.cpu() for k, v in model.state_dict().items()}, state)


def _train_on_workers(
    cfg: DictConfig, data: SliceData, splits: Splits, name: str, log: Log
) -> TeacherRun:
    """Train the teacher on ``teacher.workers`` DeepSpeed workers; the weights come back
    consolidated from rank 0."""
    connect(cfg, log)
    epochs = cfg.teacher.fit.epochs
    log(
        f"teacher: training {name} on {len(splits.train)} slices for {epochs} epochs on "
        f"{cfg.teacher.workers} workers (DeepSpeed ZeRO stage {cfg.teacher.zero_stage})"
    )
    config = {"cfg": as_dict(cfg), "data": ray.put(data), "splits": ray.put(splits)}
    run = f"teacher-{name}-{int(time.time())}"
    result = run_on_workers(_train_worker, config, cfg, run)
    with result.checkpoint.as_directory() as folder:
        weights = load_weights(Path(folder) / "model.pt")
        summary = json.loads((Path(folder) / "summary.json").read_text())
        held = [
            json.loads((Path(folder) / f"held-rank{r}.json").read_text())["held"]
            for r in range(cfg.teacher.workers)
        ]
    state = FitState(
        best_val=summary["best_val"],
        best_epoch=summary["best_epoch"],
        history=summary["history"],
    )
    for h in state.history:
        log(teacher_epoch_line(h, f"{h['epoch']}/{epochs}"))
    return TeacherRun(weights, state, held)


def _train_worker(config: dict) -> None:
    """One worker of ``_train_on_workers`` (runs in a Ray Train worker process)."""
    cfg = OmegaConf.create(config["cfg"])
    data: SliceData = ray.get(config["data"])
    splits: Splits = ray.get(config["splits"])
    rank, world = worker_rank()
    device = get_device()
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_trial)))
    stage = cfg.teacher.zero_stage
    torch.manual_seed(cfg.teacher.seed)  # every rank builds the same initial teacher
    bf16 = device.type == "cuda"
    model = sharded_teacher_network(cfg, stage, cfg.teacher.fit.batch_size, bf16).to(device)
    backend = DeepSpeedBackend(model, stage, lambda: teacher_network(cfg), rank, world)
    state = _fit_teacher(cfg, model, backend, data, splits, teacher_name(cfg), backend)
    with tempfile.TemporaryDirectory() as folder:
        held = {"held": held_parameters(model, stage)}
        (Path(folder) / f"held-rank{rank}.json").write_text(json.dumps(held))
        if rank == 0:
            torch.save(state.best_model, Path(folder) / "model.pt")
            summary = {
                "best_epoch": state.best_epoch,
                "best_val": state.best_val,
                "history": state.history,
            }
            (Path(folder) / "summary.json").write_text(json.dumps(summary))
        ray.train.report(
            {"step": state.step}, checkpoint=ray.train.Checkpoint.from_directory(folder)
        )


# ---- the frozen teacher -----------------------------------------------------------------


def freeze(teacher: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients, channels_last weights (faster convolutions on
    CPU and CUDA alike: 2.7 s -> 2.2 s for T1 at 256x256, batch 4, on a 2-core CPU)."""
    teacher.requires_grad_(False)
    return teacher.eval().to(memory_format=torch.channels_last)


def frozen_teacher(cfg: DictConfig, weights: dict[str, Tensor], device: torch.device) -> nn.Module:
    """The teacher built from its config and weights, frozen (``freeze``) on ``device``."""
    model = teacher_network(cfg)
    model.load_state_dict(weights)
    return freeze(model.to(device))


def teacher_taps(teacher: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """The frozen teacher's taps for ``x`` (B, 3, H, W), as contiguous float32 tensors.

    Runs under ``torch.inference_mode`` without the reconstruction decoder, on a
    channels_last input, in bf16 autocast on CUDA. The taps are copied out of inference
    mode once (inference tensors cannot be saved for the backward pass of the heads that
    read them); the copy also restores the contiguous layout the losses flatten.
    """
    cuda = x.device.type == "cuda"
    with torch.inference_mode(), torch.autocast(x.device.type, torch.bfloat16, enabled=cuda):
        taps = teacher(x.contiguous(memory_format=torch.channels_last), with_recon=False)
    return {
        k: torch.empty(v.shape, dtype=torch.float32, device=v.device).copy_(v)
        for k, v in taps.items()
    }


def live_teacher(
    cfg: DictConfig, weights: dict[str, Tensor], device: torch.device, sharded: bool
) -> tuple[nn.Module, TapsFn]:
    """The frozen teacher and the function giving its taps of a batch: in this process
    (``teacher_taps``), or sharded by ZeRO-3 across the ranks of a Ray Train job
    (``sharded``: every rank must call it at once; rank 0 needs the whole ``weights``,
    the others only the buffers)."""
    if sharded:
        engine = sharded_frozen_teacher(cfg, weights, device)
        return engine.module, lambda x: sharded_taps(engine, x)
    teacher = frozen_teacher(cfg, weights, device)
    return teacher, lambda x: teacher_taps(teacher, x)


# ---- the teacher-output cache -----------------------------------------------------------


def outputs_dir(cfg: DictConfig, data: SliceData, splits: Splits) -> Path:
    """The teacher-output cache folder of this config's teacher."""
    return teacher_dir(cfg, data, splits) / "outputs"


def _taps_of_slices(
    taps_of: TapsFn, data: SliceData, mine: np.ndarray, device: torch.device, steps: int
):
    """(indices, float16 taps) of ``mine`` in batches of 32, over ``steps`` forward passes
    (a rank past its last slice repeats one and drops it, so that ranks step together)."""
    size = 32
    for step in range(steps):
        idx = mine[step * size : (step + 1) * size]
        x, _ = to_tensors(data, idx if len(idx) else mine[:1], device)
        taps = taps_of(x)
        if len(idx):
            yield idx, {name: taps[name].cpu().numpy().astype(np.float16) for name in TAPS}


def write_teacher_outputs(teacher: nn.Module, data: SliceData, folder: Path) -> None:
    """Run the frozen ``teacher`` once over every slice of ``data``; store its taps in
    ``folder``."""
    device = model_device(teacher)
    everything = np.arange(len(data))
    steps = len(list(batches(everything, 32, None)))
    taps_of = lambda x: teacher_taps(teacher, x)  # noqa: E731
    write_outputs(folder, data, _taps_of_slices(taps_of, data, everything, device, steps))


def teacher_outputs(teacher: nn.Module, data: SliceData, folder: Path) -> TeacherOutputs:
    """The cache in ``folder``, written first if it is missing or damaged."""
    if cache_problem(folder, data) is not None:
        if folder.exists():
            discard_dir(folder)
        write_teacher_outputs(teacher, data, folder)
    return TeacherOutputs(folder, data)


def prepare_teacher_outputs(
    cfg: DictConfig, data: SliceData, splits: Splits, weights: dict[str, Tensor], log: Log
) -> TeacherOutputs:
    """Write the teacher-output cache once, before trials start reading it (rebuilding a
    damaged one, and saying so)."""
    folder = outputs_dir(cfg, data, splits)
    problem = cache_problem(folder, data, checksums=True)
    if problem is not None:
        if folder.exists():
            discard_dir(folder)
        why = "" if problem == "it does not exist" else f" (the cache is damaged: {problem})"
        log(f"teacher outputs: caching the taps of {len(data)} slices in {folder}{why}")
        if sharded_teacher(cfg):
            run = write_outputs_on_workers(cfg, weights, data, folder, log)
            held = ", ".join(f"{r['held']:,}" for r in run["ranks"])
            log(
                f"teacher outputs: ZeRO-3 over {run['workers']} workers holding {held} "
                f"parameter elements each, in {run['wall_s']:.1f}s"
            )
        else:
            teacher = frozen_teacher(cfg, weights, resolve_device(cfg.device))
            write_teacher_outputs(teacher, data, folder)
    outputs = TeacherOutputs(folder, data)
    log(f"teacher outputs: {outputs.bytes_per_slice / 1024:.0f} KiB per slice (float16)")
    return outputs


def write_outputs_on_workers(
    cfg: DictConfig, weights: dict[str, Tensor], data: SliceData, folder: Path, log: Log
) -> dict[str, Any]:
    """Fill the cache in ``folder`` with the frozen teacher sharded by ZeRO stage 3 over
    ``teacher.workers`` workers, each computing the taps of its share of the slices.
    Returns what each rank held and how long it took."""
    connect(cfg, log)
    config = {
        "cfg": as_dict(cfg),
        "weights": ray.put(weights),  # for rank 0; the others need only the buffers
        "buffers": ray.put({k: weights[k] for k in buffer_names(cfg)}),
        "data": ray.put(data),
    }
    start = time.perf_counter()
    run = f"teacher-outputs-{folder.parent.name}-{int(time.time())}"
    result = run_on_workers(_outputs_worker, config, cfg, run)
    report: dict[str, Any] = {"workers": cfg.teacher.workers, "ranks": []}
    with result.checkpoint.as_directory() as shards:
        parts = []
        for rank in range(cfg.teacher.workers):
            part = np.load(Path(shards) / f"taps-rank{rank}.npz")
            report["ranks"].append(json.loads((Path(shards) / f"rank{rank}.json").read_text()))
            parts.append((part["idx"], {name: part[name] for name in TAPS}))
        write_outputs(folder, data, parts)
    report["wall_s"] = time.perf_counter() - start
    return report


def _outputs_worker(config: dict) -> None:
    """One worker of ``write_outputs_on_workers``."""
    cfg = OmegaConf.create(config["cfg"])
    data: SliceData = ray.get(config["data"])
    rank, world = worker_rank()
    device = get_device()
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_trial)))
    rss_start = rss_bytes()
    weights = ray.get(config["weights"] if rank == 0 else config["buffers"])
    teacher, taps_of = live_teacher(cfg, weights, device, sharded=True)
    del weights
    everything = np.arange(len(data))
    mine = rank_share(everything, rank, world)
    steps = math.ceil(len(rank_share(everything, 0, world)) / 32)
    start = time.perf_counter()
    out = list(_taps_of_slices(taps_of, data, mine, device, steps))
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    with tempfile.TemporaryDirectory() as folder:
        np.savez(
            Path(folder) / f"taps-rank{rank}.npz",
            idx=mine,
            **{name: np.concatenate([taps[name] for _, taps in out]) for name in TAPS},
        )
        info = {
            "rank": rank,
            "held": held_parameters(teacher, 3),
            "slices": len(mine),
            "seconds": seconds,
            "cuda_peak_bytes": peak,
            "rss_start_bytes": rss_start,
            "rss_peak_bytes": peak_rss_bytes(),
        }
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps(info))
        ray.train.report(
            {"slices": len(mine)}, checkpoint=ray.train.Checkpoint.from_directory(folder)
        )

"""The teacher's whole life: trained once (or loaded from its keyed cache), frozen for
distillation, and optionally run once over every slice into a float16 output cache.

A teacher's folder under ``work_dir/teachers/`` is keyed by the teacher's config, the
data and the split, so any change to them trains a new teacher. It holds ``model.pt``
(a plain state dict, loaded with ``weights_only=True``), ``meta.json`` (test metrics,
parameters, wall time) and, with ``kd.teacher_cache``, ``outputs/`` (the taps).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from kdcore.config import as_dict, resolve_device, stable_hash, teacher_settings
from kdcore.data.batches import batches, to_tensors
from kdcore.data.slices import SliceData
from kdcore.data.splits import Splits
from kdcore.io import atomic_dir, atomic_path, write_text_atomic
from kdcore.losses import MultiTaskLoss
from kdcore.models import TransUNet, build_teacher, count_parameters
from kdcore.names import teacher_name
from kdcore.progress import Log, Progress
from kdcore.sharded import train_teacher_sharded, write_teacher_outputs_sharded
from kdcore.training import FitSettings, FitState, evaluate, fit, model_device

TAPS = ("enc", "bottleneck", "dec", "logits")  # what distillation reads from a teacher


@dataclass
class Teacher:
    """A trained teacher on disk: its folder (weights, metadata) and its metadata."""

    folder: Path
    meta: dict[str, Any]

    @property
    def path(self) -> Path:
        """The weights file (a plain state dict)."""
        return self.folder / "model.pt"

    def weights(self) -> dict[str, Tensor]:
        """The state dict, loaded so that nothing in the file is executed."""
        return load_weights(self.path)


def teacher_network(cfg: DictConfig) -> nn.Module:
    """A new (untrained) teacher of ``teacher.arch``: T1, the multi-task U-Net of
    ``teacher.width`` and ``teacher.depth``, or T2, the multi-task TransUNet of
    ``teacher.t2`` for ``image_size`` inputs."""
    if cfg.teacher.arch == "t2":
        t2 = cfg.teacher.t2
        return TransUNet(
            t2.width, tuple(t2.blocks), t2.hidden, t2.layers, t2.heads, t2.mlp, cfg.image_size
        )
    return build_teacher(cfg.teacher.width, cfg.teacher.depth)


def load_weights(path: Path) -> dict[str, Tensor]:
    """A teacher's state dict (``weights_only=True``: nothing in the file is executed)."""
    return torch.load(path, map_location="cpu", weights_only=True)


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


def load_or_train_teacher(
    cfg: DictConfig, data: SliceData, splits: Splits, log: Log = print
) -> Teacher:
    """The cached teacher for this config and data, trained first if there is none.

    The teacher trains on all training patients; its checkpoint is picked on validation.
    """
    folder = teacher_dir(cfg, data, splits)
    if (folder / "meta.json").is_file():
        log(f"teacher: reusing {folder}")
        return Teacher(folder, json.loads((folder / "meta.json").read_text()))
    name = teacher_name(cfg)
    start = time.perf_counter()
    if cfg.teacher.workers > 1:
        weights, run = train_teacher_sharded(cfg, data, splits, name, log)
        model = teacher_network(cfg)
        model.load_state_dict(weights)
        model = model.to(resolve_device(cfg.device))
        best_epoch, best_val = run["best_epoch"], run["best_val"]
    else:
        model, state = _train_teacher(cfg, data, splits, name, log)
        best_epoch, best_val = state.best_epoch, state.best_val
    meta = {
        "name": name,
        "params": count_parameters(model),
        "config": as_dict(cfg.teacher),
        "best_epoch": best_epoch,
        "val_dice": best_val,
        "test": evaluate(model, data, splits.test),
        "wall_s": time.perf_counter() - start,
    }
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.pt") as tmp:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    write_text_atomic(folder / "meta.json", json.dumps(meta, indent=1))
    log(f"teacher: test dice {meta['test']['dice']:.4f}, saved to {folder}")
    return Teacher(folder, meta)


def _train_teacher(
    cfg: DictConfig, data: SliceData, splits: Splits, name: str, log: Log
) -> tuple[nn.Module, FitState]:
    """Train the teacher in this process; return it at its chosen epoch and the fit state."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.teacher.seed)
    model = teacher_network(cfg).to(device)
    objective = MultiTaskLoss(cfg.teacher.seg_loss, cfg.teacher.recon_weight)
    settings = FitSettings(**as_dict(cfg.teacher.fit))
    log(
        f"teacher: training {name} ({count_parameters(model):,} params) on "
        f"{len(splits.train)} slices for {settings.epochs} epochs"
    )
    progress = Progress(settings.epochs)

    def on_epoch(state, _checkpoint):
        h = state.history[-1]
        log(
            f"teacher epoch {progress.advance()}: loss {h['train_loss']:.4f} "
            f"(seg {h['loss_seg']:.4f}, recon {h['loss_recon']:.4f}), "
            f"val dice {h['val_dice']:.4f} ({h['epoch_s']:.1f}s)"
        )

    state = fit(
        model,
        lambda x, y, _idx: objective(model(x), x, y),
        data,
        splits.train,
        splits.val,
        settings,
        cfg.teacher.seed,
        on_epoch=on_epoch,
        name=f"teacher {name}",
    )
    return model, state


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


# ---- the teacher-output cache ----------------------------------------------------------
# Without augmentation a teacher's taps for a slice never change, so a grid can read them
# from disk instead of running the teacher at every step: memory-mapped float16 arrays in
# the teacher's folder (keyed by teacher and data, so a new teacher gets a new cache).


def write_teacher_outputs(
    teacher: nn.Module, data: SliceData, folder: Path, batch_size: int = 32
) -> None:
    """Run ``teacher`` once over every slice of ``data`` and store its taps in ``folder``."""
    device = model_device(teacher)
    n = len(data)
    with atomic_dir(folder) as tmp:
        arrays = {}
        for idx in batches(np.arange(n), batch_size, None):
            x, _ = to_tensors(data, idx, device)
            taps = teacher_taps(teacher, x)
            for name in TAPS:
                if name not in arrays:
                    shape = (n, *taps[name].shape[1:])
                    arrays[name] = np.lib.format.open_memmap(
                        tmp / f"{name}.npy", mode="w+", dtype=np.float16, shape=shape
                    )
                arrays[name][idx] = taps[name].cpu().numpy()
        for array in arrays.values():
            array.flush()
        per_slice = sum(a[0].nbytes for a in arrays.values())
        meta = {"data": data.key, "slices": n, "bytes_per_slice": per_slice}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))


class TeacherOutputs:
    """Read-only view of a teacher-output cache: ``outputs(idx, device)`` -> tap dict."""

    def __init__(self, folder: Path, data: SliceData):
        meta = json.loads((folder / "meta.json").read_text())
        if meta["data"] != data.key or meta["slices"] != len(data):
            raise ValueError(f"teacher-output cache {folder} was made for other data")
        self.bytes_per_slice = meta["bytes_per_slice"]
        self.arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in TAPS}

    def __call__(self, idx: np.ndarray, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Taps of slices ``idx`` (sorted) as float32 tensors on ``device``.

        float16 is moved first (half the bytes to a GPU) and widened there; torch also
        widens faster than numpy on CPU.
        """
        return {
            name: torch.from_numpy(a[idx]).to(device).float() for name, a in self.arrays.items()
        }


def outputs_dir(cfg: DictConfig, data: SliceData, splits: Splits) -> Path:
    """The teacher-output cache folder of this config's teacher."""
    return teacher_dir(cfg, data, splits) / "outputs"


def teacher_outputs(teacher: nn.Module, data: SliceData, folder: Path) -> TeacherOutputs:
    """The cache in ``folder``, written first if it does not exist yet."""
    if not (folder / "meta.json").is_file():
        write_teacher_outputs(teacher, data, folder)
    return TeacherOutputs(folder, data)


def prepare_teacher_outputs(
    cfg: DictConfig, data: SliceData, splits: Splits, weights: dict[str, Tensor], log: Log
) -> None:
    """Write the teacher-output cache once, before trials start reading it."""
    folder = outputs_dir(cfg, data, splits)
    if not (folder / "meta.json").is_file():
        log(f"teacher outputs: caching the taps of {len(data)} slices in {folder}")
    if cfg.teacher.workers > 1 and not (folder / "meta.json").is_file():
        run = write_teacher_outputs_sharded(cfg, weights, data, folder, log)
        held = ", ".join(f"{r['held']:,}" for r in run["ranks"])
        log(
            f"teacher outputs: ZeRO-3 over {run['workers']} workers holding {held} "
            f"parameter elements each, in {run['wall_s']:.1f}s"
        )
    outputs = teacher_outputs(
        frozen_teacher(cfg, weights, resolve_device(cfg.device)), data, folder
    )
    log(f"teacher outputs: {outputs.bytes_per_slice / 1024:.0f} KiB per slice (float16)")

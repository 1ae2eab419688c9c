"""The DeepSpeed backend: a ZeRO engine as ``fit``'s step backend, and the frozen teacher
sharded by ZeRO stage 3 (each rank holds about 1/N of its parameters).

Everything here runs inside the workers of a Ray Train job (``kdcore.runtime``), in a
torch.distributed process group. DeepSpeed is imported where it is used: importing it
takes seconds, which every trial process would pay otherwise.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import Tensor, nn

from kdcore.data.slices import SliceData
from kdcore.models import teacher_network
from kdcore.training import DataParallel, FitSettings, build_optimizer, build_schedule, evaluate


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


class DeepSpeedBackend(DataParallel):
    """``fit``'s steps through a DeepSpeed engine with ZeRO ``stage``: each rank trains on
    its share of every batch (as ``DataParallel``) and the engine reduces the gradients.

    ``rebuild()`` makes a plain copy of the network for validation, on rank 0; the
    gathered weights of the epoch just validated are what ``snapshot`` returns. There is
    no resumable checkpoint: an interrupted run starts again.
    """

    def __init__(self, module: nn.Module, stage: int, rebuild, rank: int, world: int):
        super().__init__(rank, world)
        self.module, self.stage, self.rebuild = module, stage, rebuild
        self.engine = None
        self._weights: dict[str, Tensor] | None = None

    def bind(self, params: list[nn.Parameter], settings: FitSettings, train_idx: np.ndarray):
        device = next(self.module.parameters()).device
        optimizer = build_optimizer(params, settings)
        schedule = build_schedule(optimizer, settings, train_idx)
        import deepspeed

        config = zero_config(self.stage, settings.batch_size, device.type == "cuda")
        self.engine, *_ = deepspeed.initialize(
            model=self.module, optimizer=optimizer, lr_scheduler=schedule, config=config
        )

    def __call__(self, *args, **kwargs):
        """The engine's forward (what the loss function calls)."""
        return self.engine(*args, **kwargs)

    def step(self, loss: Tensor, share: int, batch: int) -> None:
        self.engine.backward(loss * self.weight(share, batch))
        self.engine.step()  # the optimiser and the schedule

    def validate(self, model: nn.Module, data: SliceData, idx: np.ndarray) -> dict[str, float]:
        self._weights = full_state_dict(self.engine, self.stage)  # collective
        metrics = [None]
        if self.rank == 0:
            plain = self.rebuild()
            plain.load_state_dict(self._weights)
            metrics[0] = evaluate(plain.to(next(model.parameters()).device), data, idx)
        dist.broadcast_object_list(metrics, src=0)  # every rank decides alike
        return metrics[0]

    def snapshot(self, model: nn.Module) -> dict[str, Tensor]:
        return self._weights

    def restore(self, model: nn.Module, weights: dict[str, Tensor]) -> None:
        pass  # the caller takes the chosen weights from the fit state; shards stay as they are

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise ValueError("a DeepSpeed run cannot resume from a checkpoint; it starts again")


def full_state_dict(engine, stage: int) -> dict[str, Tensor]:
    """The whole model's state dict on CPU (gathered from every rank under ZeRO-3).

    Under ZeRO-3 a bare ``state_dict()`` holds empty shards, so the parameters are
    gathered first; every rank must call this.
    """
    import deepspeed

    module = engine.module
    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=stage == 3):
        return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def sharded_teacher_network(cfg: DictConfig, stage: int, micro_batch: int, bf16: bool):
    """A new teacher built sharded under ``zero.Init`` (stage 3), whole otherwise."""
    import deepspeed

    with deepspeed.zero.Init(
        config_dict_or_path=zero_config(stage, micro_batch, bf16), enabled=stage == 3
    ):
        return teacher_network(cfg)


def sharded_frozen_teacher(
    cfg: DictConfig, weights: dict[str, Tensor] | None, device: torch.device
) -> Any:
    """The frozen teacher as a DeepSpeed ZeRO-3 engine: built sharded (``zero.Init``),
    loaded one module at a time from rank 0's ``weights`` (other ranks may pass only the
    buffers), frozen. Call the returned engine (not its module) on every rank at once."""
    import deepspeed

    ds_config = zero_config(3, 1, device.type == "cuda")
    model = sharded_teacher_network(cfg, 3, 1, device.type == "cuda")
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


def held_parameters(model: nn.Module, stage: int) -> int:
    """Parameter elements this rank holds (its ZeRO-3 shards, else every parameter)."""
    if stage == 3:
        return sum(p.ds_tensor.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


def rss_bytes() -> int:
    """This process's resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

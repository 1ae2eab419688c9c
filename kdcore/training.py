"""One training loop for teachers, baseline students and KD students."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from kdcore.augment import augment_batch, augmenter
from kdcore.data.batches import batches, rank_share, to_tensors
from kdcore.data.classes import predicted_classes
from kdcore.data.slices import SliceData
from kdcore.errors import ConfigError, NonFiniteLossError
from kdcore.metrics import segmentation_metrics

OPTIMIZERS = ("adamw", "adam", "rmsprop", "sgd")
SCHEDULES = ("cosine", "constant")

# loss_fn(images, masks, slice indices) -> (loss, parts)
LossFn = Callable[[Tensor, Tensor, np.ndarray], tuple[Tensor, dict[str, Tensor]]]


@dataclass
class FitSettings:
    """Optimisation settings, identical for a baseline and its KD runs."""

    epochs: int
    batch_size: int
    # The budget in optimiser steps (null: ``epochs`` passes over the training slices, so
    # that fewer slices get fewer steps: the thesis's way)
    steps: int | None = None
    eval_every: int | None = None  # steps between validations (null: once per epoch)
    # Early stopping: end when validation Dice has not improved for ``patience`` steps
    # (null: never), once ``min_steps`` steps are done
    patience: int | None = None
    min_steps: int = 0
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.0
    schedule: str = "cosine"
    augment: bool = False  # random flips / 90-degree rotations of training slices (MONAI)
    # Train in the NHWC layout (torch.channels_last), which oneDNN's CPU convolutions run
    # faster; float results differ from the default NCHW layout (README: Speed)
    channels_last: bool = False


def build_optimizer(params: list[nn.Parameter], s: FitSettings) -> torch.optim.Optimizer:
    """The optimizer named in the settings (one of ``OPTIMIZERS``)."""
    if s.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {s.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
        )
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, s.lr, betas=tuple(s.betas), weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, s.lr, betas=tuple(s.betas), weight_decay=s.weight_decay)
    if s.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    return torch.optim.SGD(params, s.lr, momentum=s.momentum, weight_decay=s.weight_decay)


def steps_per_epoch(train_idx: np.ndarray, batch_size: int) -> int:
    """How many batches one pass over ``train_idx`` makes (``batches``)."""
    return sum(1 for _ in batches(train_idx, batch_size, None))


def total_steps(s: FitSettings, train_idx: np.ndarray) -> int:
    """The run's budget in optimiser steps: ``s.steps``, else ``s.epochs`` passes."""
    if s.steps is not None:
        return int(s.steps)
    return s.epochs * steps_per_epoch(train_idx, s.batch_size)


def build_schedule(
    optimizer: torch.optim.Optimizer, s: FitSettings, train_idx: np.ndarray
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of the settings, stepped once per batch: cosine to zero
    over the whole budget (``total_steps``), or constant. An early stop ends it sooner."""
    if s.schedule == "cosine":
        steps = total_steps(s, train_idx)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters."""
    return next(model.parameters()).device


@torch.no_grad()
def predict(model: nn.Module, data: SliceData, idx: np.ndarray, batch_size: int = 32) -> Tensor:
    """Predicted class maps (N, H, W) uint8 of a segmentation network on slices ``idx``
    (``predicted_classes``: sigmoid > 0.5 for one class, the most probable class for
    more)."""
    was_training = model.training
    model.eval()
    out = []
    for b in batches(idx, batch_size, None):
        x, _ = to_tensors(data, b, model_device(model))
        out.append(predicted_classes(model(x, with_recon=False)["logits"]).cpu())
    model.train(was_training)
    return torch.cat(out)


def evaluate(model: nn.Module, data: SliceData, idx: np.ndarray) -> dict[str, Any]:
    """Pooled slice metrics and mean 3D Dice of ``model`` on slices ``idx`` (per class
    and their mean when there are several: ``segmentation_metrics``)."""
    pred = predict(model, data, idx)
    target = torch.from_numpy(np.asarray(data.masks[idx]))
    return segmentation_metrics(pred, target, data.case[idx], data.classes.names)


@torch.no_grad()
def mean_loss(
    model: nn.Module, loss: nn.Module, data: SliceData, idx: np.ndarray, batch_size: int = 32
) -> float:
    """``loss(logits, masks)`` over slices ``idx`` in batches, averaged over slices."""
    was_training = model.training
    model.eval()
    total = 0.0
    for b in batches(idx, batch_size, None):
        x, y = to_tensors(data, b, model_device(model))
        total += float(loss(model(x, with_recon=False)["logits"], y)) * len(b)
    model.train(was_training)
    return total / len(idx)


@dataclass
class FitState:
    """Everything needed to resume training after an interruption."""

    step: int = 0  # optimiser steps taken
    evals: int = 0  # validations done
    best_val: float = -1.0  # validation Dice of the chosen checkpoint
    best_step: int = -1
    best_epoch: float = -1.0  # passes over the training slices at the chosen checkpoint
    best_score: float = -math.inf  # what the checkpoint is chosen by (see ``fit``)
    best_model: dict[str, Tensor] | None = None
    peak_val: float = -1.0  # the best validation Dice so far, and its step: what early
    peak_step: int = -1  # stopping watches (also when the checkpoint is chosen otherwise)
    stopped_early: bool = False  # early stopping ended the run before its budget
    history: list[dict[str, float]] = field(default_factory=list)


class Backend:
    """How ``fit`` takes a step: here, one process with a plain optimiser.

    Subclasses run a step on several ranks (``DataParallel``; a DeepSpeed engine in
    ``kdcore.zero``); ``fit`` itself does not change with the backend.
    """

    rank, world = 0, 1

    def bind(self, params: list[nn.Parameter], settings: FitSettings, train_idx: np.ndarray):
        """Build the optimiser and schedule of ``settings`` over ``params``."""
        self.optimizer = build_optimizer(params, settings)
        self.schedule = build_schedule(self.optimizer, settings, train_idx)
        self.params = params

    def share(self, batch: np.ndarray) -> np.ndarray:
        """This rank's slices of a batch (all of it in one process)."""
        return batch

    def check(self, name: str, epoch: int, values: dict[str, float]) -> None:
        """Stop at once, with what went non-finite, when the loss of this step did."""
        if not math.isfinite(values["train_loss"]):
            raise NonFiniteLossError(_non_finite_message(name, epoch, values))

    def step(self, loss: Tensor, share: int, batch: int) -> None:
        """One optimiser and schedule step on ``loss`` (of ``share`` of ``batch`` slices)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss, share, batch)
        self.optimizer.step()
        self.schedule.step()

    def backward(self, loss: Tensor, share: int, batch: int) -> None:
        """The gradients of ``loss`` in ``.grad``."""
        loss.backward()

    def totals(self, sums: dict[str, float], count: int) -> tuple[dict[str, float], int]:
        """An epoch's loss sums and sample count over every rank."""
        return sums, count

    def validate(self, model: nn.Module, data: SliceData, idx: np.ndarray) -> dict[str, float]:
        """The metrics ``fit`` picks its checkpoint by (the same on every rank)."""
        return evaluate(model, data, idx)

    def snapshot(self, model: nn.Module) -> dict[str, Tensor]:
        """A copy of the model's weights at the epoch just validated."""
        return copy.deepcopy(model.state_dict())

    def restore(self, model: nn.Module, weights: dict[str, Tensor]) -> None:
        """Load the chosen epoch's weights back into the model."""
        model.load_state_dict(weights)

    def state_dict(self) -> dict[str, Any]:
        """The optimiser and schedule, for a resumable checkpoint."""
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the optimiser and schedule of ``state_dict``."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])


class DataParallel(Backend):
    """Rank ``rank`` of ``world`` in a torch.distributed process group: it trains on its
    share of every batch (``rank_share``) and averages the gradients over ranks with an
    all-reduce, as DDP does, so every rank takes the step of the whole batch's mean loss
    (up to the batch Dice and BatchNorm statistics, which each rank takes on its share)."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def share(self, batch: np.ndarray) -> np.ndarray:
        return rank_share(batch, self.rank, self.world)

    def check(self, name: str, epoch: int, values: dict[str, float]) -> None:
        # every rank stops at the same step (one alone would leave the others waiting in
        # the next all-reduce): the ranks add up how many of them went non-finite
        bad = torch.tensor([0.0 if math.isfinite(values["train_loss"]) else 1.0])
        dist.all_reduce(bad)
        if bad.item():
            if math.isfinite(values["train_loss"]):
                raise NonFiniteLossError(
                    f"{name}: the loss became non-finite in epoch {epoch} on another of the "
                    f"{self.world} ranks. Lower the learning rate or the KD weights, or check "
                    "the data"
                )
            super().check(f"{name} (rank {self.rank})", epoch, values)

    def weight(self, share: int, batch: int) -> float:
        """Each rank's mean loss weighted so that the averaged gradient is the batch's."""
        return self.world * share / batch

    def backward(self, loss: Tensor, share: int, batch: int) -> None:
        (loss * self.weight(share, batch)).backward()
        _average_gradients(self.params, self.world)

    def totals(self, sums: dict[str, float], count: int) -> tuple[dict[str, float], int]:
        return _sum_over_ranks(sums, count)


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    data: SliceData,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    settings: FitSettings,
    seed: int,
    extra_modules: nn.Module | None = None,
    on_epoch: Callable[[FitState, dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
    name: str = "training",
    select: Callable[[nn.Module], float] | None = None,
    backend: Backend | None = None,
) -> FitState:
    """Train ``model`` with ``loss_fn(images, masks, idx) -> (loss, parts)``; keep the best
    on val (``idx``: the batch's slice indices, for per-slice caches).

    The run takes ``total_steps(settings)`` optimiser steps over shuffled passes of
    ``train_idx`` and validates every ``settings.eval_every`` steps (once per pass by
    default) and at the last step. With ``settings.patience`` it stops early once
    validation Dice (whatever chooses the checkpoint) has not improved for that many steps
    (and ``min_steps`` are done);
    ``FitState.stopped_early`` says so. The checkpoint is chosen by pooled Dice on
    ``val_idx`` (never on test) and loaded back into ``model`` at the end;
    ``select(model) -> score`` (higher is better) replaces that choice, only to reproduce
    the thesis protocol (the test loss). ``extra_modules`` (e.g. projection heads) are
    optimised with the model. The batches of pass ``e`` depend only on (seed, e), so a
    resumed run sees the same batches (and, with ``settings.augment``, the same
    augmentations: each batch's are seeded by (seed, e, its place in the pass)).

    Each validation's history entry holds the step, the passes done (``epoch``,
    fractional when validations fall inside a pass), the mean loss since the previous one
    (``train_loss``) and the mean of each part of it (``loss_<part>``, e.g. ``loss_seg``),
    the validation Dice, and the seconds of the training steps (``train_s``) and of the
    whole stretch with its validation (``epoch_s``). A non-finite loss stops training at
    the step it happens, on every backend, with a ``NonFiniteLossError`` naming ``name``,
    the epoch and the non-finite parts. ``on_epoch(state, checkpoint)`` gets a resumable
    checkpoint dict after each validation (``resume`` takes the same dict back).

    ``backend`` takes the steps: one process by default; ``DataParallel`` for rank
    ``rank`` of a data-parallel run (the history then holds the whole batch's losses);
    ``kdcore.zero.DeepSpeedBackend`` for a DeepSpeed engine.
    """
    backend = backend or Backend()
    device = model_device(model)
    if settings.channels_last:
        _to_layout((model, extra_modules), torch.channels_last)
    params = list(model.parameters())
    if extra_modules is not None:
        params += list(extra_modules.parameters())
    backend.bind(params, settings, train_idx)
    state = FitState()
    if resume is not None:
        model.load_state_dict(resume["model"])
        if extra_modules is not None:
            extra_modules.load_state_dict(resume["extra"])
        backend.load_state_dict(resume)
        state = FitState(**resume["state"])
    per_epoch = steps_per_epoch(train_idx, settings.batch_size)
    budget = total_steps(settings, train_idx)
    every = settings.eval_every or per_epoch
    augment = augmenter(0) if settings.augment else None
    order: tuple[int, list[np.ndarray]] = (-1, [])  # the batches of the current pass
    model.train()
    while state.step < budget and not state.stopped_early:
        start = time.perf_counter()
        sums: dict[str, float] = {}
        count = 0
        stop = min(budget, (state.step // every + 1) * every)
        while state.step < stop:
            epoch, place = divmod(state.step, per_epoch)
            if order[0] != epoch:
                order = (epoch, list(batches(train_idx, settings.batch_size, _rng(seed, epoch))))
            batch = order[1][place]
            idx = backend.share(batch)
            # every rank steps together; one without samples runs one with weight 0
            x, y = to_tensors(data, idx if len(idx) else batch[:1], device)
            if augment is not None:  # its own stream: batch order stays as without it
                augment.set_random_state(int(_rng(seed, epoch, 1, place).integers(2**31)))
                x, y = augment_batch(augment, x, y)
            if settings.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss, parts = loss_fn(x, y, idx if len(idx) else batch[:1])
            # one device-to-host copy for the loss and its parts
            numbers = torch.stack([loss.detach(), *parts.values()]).float().tolist()
            values = dict(zip(["train_loss", *(f"loss_{k}" for k in parts)], numbers, strict=True))
            backend.check(name, epoch + 1, values)
            backend.step(loss, len(idx), len(batch))
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
            count += len(idx)
            state.step += 1
        sums, count = backend.totals(sums, count)
        trained = time.perf_counter()
        val = backend.validate(model, data, val_idx)
        state.evals += 1
        epochs_done = _passes(state.step, per_epoch)
        score = val["dice"] if select is None else select(model)
        if score > state.best_score:
            state.best_score, state.best_val = score, val["dice"]
            state.best_step, state.best_epoch = state.step, epochs_done
            state.best_model = backend.snapshot(model)
        if val["dice"] > state.peak_val:
            state.peak_val, state.peak_step = val["dice"], state.step
        patience = settings.patience
        if patience is not None and state.step < budget:
            waited = state.step - state.peak_step
            state.stopped_early = state.step >= settings.min_steps and waited >= patience
        state.history.append(
            {
                "step": state.step,
                "epoch": epochs_done,
                **{k: v / count for k, v in sums.items()},
                "val_dice": val["dice"],
                "train_s": trained - start,  # the training steps
                "epoch_s": time.perf_counter() - start,  # with validation and selection
            }
        )
        if on_epoch is not None:
            checkpoint = {
                "model": model.state_dict(),
                "extra": extra_modules.state_dict() if extra_modules is not None else {},
                **backend.state_dict(),
                "state": vars(state),
            }
            on_epoch(state, checkpoint)
    backend.restore(model, state.best_model)
    if settings.channels_last:  # hand the networks back in the default layout
        _to_layout((model, extra_modules), torch.contiguous_format)
    return state


def _to_layout(modules: tuple[nn.Module | None, ...], layout: torch.memory_format) -> None:
    for module in modules:
        if module is not None:
            module.to(memory_format=layout)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def _passes(step: int, per_epoch: int) -> int | float:
    """Passes over the training slices after ``step`` steps: whole, or to 4 decimals."""
    whole, rest = divmod(step, per_epoch)
    return whole if rest == 0 else round(step / per_epoch, 4)


def _average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Average the gradients over the ``world`` ranks (all-reduce), as DDP does."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(part.view_as(g))


def _sum_over_ranks(sums: dict[str, float], count: int) -> tuple[dict[str, float], int]:
    """An epoch's loss sums and sample count added up over every rank."""
    total = torch.tensor([count, *sums.values()], dtype=torch.float64)
    dist.all_reduce(total)
    return dict(zip(sums, total[1:].tolist(), strict=True)), int(total[0])


def _non_finite_message(name: str, epoch: int, values: dict[str, float]) -> str:
    """Which parts of the loss went non-finite, and what to do about it."""
    bad = [
        f"term {k.removeprefix('loss_')} = {v}"
        for k, v in values.items()
        if k.startswith("loss_") and not math.isfinite(v)
    ]
    where = ", ".join(bad) or f"the weighted sum = {values['train_loss']} (each term is finite)"
    return (
        f"{name}: the loss became non-finite in epoch {epoch}: {where}. Lower the learning "
        "rate or that term's weight, or check the data"
    )

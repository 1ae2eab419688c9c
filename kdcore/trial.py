"""One student trial: train a baseline or KD student, return its row of test metrics.

Every Ray Tune trial calls ``run_trial`` (or, when each trial spans several workers,
``run_trial_on_workers``); so can a script or a test, in-process.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from kdcore.convergence import convergence
from kdcore.data.prepare import prepare_data
from kdcore.data.splits import example_slices
from kdcore.export import pack_weights
from kdcore.losses import DistillationLoss, maybe_compile, parse_variant
from kdcore.models import build_student, count_parameters, student_name, teacher_name
from kdcore.models.teachers import network_channels
from kdcore.progress import Log
from kdcore.protocols import SELECT_TEST_LOSS
from kdcore.provenance import machine, machine_text
from kdcore.runtime import run_on_workers, worker_rank
from kdcore.settings import as_dict, resolve_device
from kdcore.teacher import live_teacher, outputs_dir, teacher_dir, teacher_outputs
from kdcore.training import DataParallel, FitSettings, FitState, evaluate, fit, mean_loss, predict


def epoch_line(state: FitState, weights: dict[str, float]) -> str:
    """A trial's stretch up to a validation: loss, each term's share of the weighted
    objective, val Dice.

    E.g. 'step 96 (epoch 3): loss 0.412 = seg 61% + bottleneck 39%; val dice 0.801 (2.1s)'.
    """
    h = state.history[-1]
    shares = {k: weights[k] * h[f"loss_{k}"] for k in weights}
    total = sum(abs(v) for v in shares.values()) or 1.0
    terms = " + ".join(f"{k} {100 * abs(v) / total:.0f}%" for k, v in shares.items())
    return (
        f"step {h['step']} (epoch {h['epoch']}): loss {h['train_loss']:.4f} = {terms}; "
        f"val dice {h['val_dice']:.4f} ({h['epoch_s']:.1f}s)"
    )


def pack_masks(masks: torch.Tensor) -> str:
    """Class maps (K, H, W) as text (base64) that travels in a trial's result: bits when
    they are binary, else one byte per pixel."""
    values = masks.cpu().numpy().astype(np.uint8)
    if values.max(initial=0) <= 1:
        bits = np.packbits(values)
        return json.dumps([list(masks.shape), base64.b64encode(bits.tobytes()).decode()])
    return json.dumps([list(masks.shape), base64.b64encode(values.tobytes()).decode(), "u8"])


def unpack_masks(text: str) -> np.ndarray:
    """The class maps of ``pack_masks``, as a (K, H, W) uint8 array."""
    shape, data, *kind = json.loads(text)
    raw = np.frombuffer(base64.b64decode(data), dtype=np.uint8)
    if kind == ["u8"]:
        return raw.reshape(shape).copy()
    return np.unpackbits(raw)[: int(np.prod(shape))].reshape(shape)


def exports_weights(cfg: DictConfig, seed: int) -> bool:
    """Whether a trial of ``seed`` keeps its chosen student's weights: with ``export``
    on, the first seed's trials (the lowest seed: the students a table exports)."""
    return bool(cfg.get("export")) and seed == min(cfg.seeds)


def fit_settings(cfg: DictConfig, kd: bool) -> FitSettings:
    """The student's optimisation settings: ``student.fit`` and the ``budget`` for every
    run, except that the thesis protocol trains baselines with ``protocol.baseline_fit``
    merged over ``student.fit``."""
    fit = as_dict(cfg.student.fit)
    if not kd and cfg.protocol.baseline_fit:
        fit.update(as_dict(cfg.protocol.baseline_fit))
    b = cfg.budget
    return FitSettings(
        **fit,
        epochs=b.epochs or 0,
        steps=b.steps,
        eval_every=b.eval_every,
        patience=b.patience,
        min_steps=b.min_steps,
    )


def ending(
    cfg: DictConfig, history: list[dict], best_step: int, stopped_early: bool
) -> dict[str, Any]:
    """How a run ended under ``budget.convergence``: ``steps`` run, the end's
    ``val_slope`` (Dice points per 1,000 steps over the last 20%), ``late_gain`` (points)
    and ``converged`` (``kdcore.convergence``).
    Recomputed from the history when a stored trial is reused under other settings."""
    c = cfg.budget.convergence
    ended = convergence(history, best_step, stopped_early, c.window, c.tolerance)
    return {
        "steps": ended.steps,
        "val_slope": ended.slope,
        "late_gain": ended.late_gain,
        "converged": ended.converged,
    }


def test_loss_selection(
    cfg: DictConfig, seg_loss: torch.nn.Module, data, test_idx
) -> Callable[[torch.nn.Module], float] | None:
    """None (checkpoints chosen on validation Dice), or with ``protocol.select=test_loss``
    the thesis's choice: the lowest segmentation loss on the TEST slices."""
    if cfg.protocol.select != SELECT_TEST_LOSS:
        return None
    return lambda model: -mean_loss(model, seg_loss, data, test_idx)


def run_trial(
    cfg: DictConfig,
    variant: str,
    seed: int,
    teachers: dict[str, dict[str, Tensor]] | None,
    on_epoch: Callable[[FitState, dict], None] | None = None,
    resume: dict | None = None,
    log: Log | None = None,
    evaluate_test: bool = True,
    ranks: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Train one student (baseline or KD variant) and return its row of test metrics
    (``evaluate_test=False``, for tuning: only its validation Dice, best epoch and
    history).

    Baseline and KD variants share the optimiser, schedule, budget of steps, batches, data
    subset and seed; they differ only in the KD terms of the objective. ``teachers`` maps a
    teacher's folder name (``teacher_dir``) to its weights; the trial takes the one of its
    config and data. ``log`` gets one line per validation (``epoch_line``); the row's
    ``history`` holds, per validation, the losses since the previous one (the total and
    each term, unweighted), validation Dice and seconds, and ``cases`` the test counts of
    each patient; its ``steps``, ``best_step``, ``stopped_early``, ``val_slope``,
    ``late_gain`` and ``converged`` say how training ended (``ending``).

    With ``ranks = (rank, world)`` this is one rank of a trial spanning ``world`` workers
    (``run_trial_on_workers``): the student data-parallel, the teacher sharded by ZeRO-3
    across the workers.
    """
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    # with vary_subset, each seed also trains on a student subset of its own
    subset_seed = 1000 + seed if cfg.vary_subset else None
    data, splits = prepare_data(cfg, lambda _: None, subset_seed)
    data_s = time.perf_counter() - start
    label, terms = parse_variant(variant)
    torch.manual_seed(seed)
    channels = network_channels(cfg)
    student = build_student(cfg.student.width, *channels).to(device)
    teacher = taps_of = None
    if terms:
        weights = teachers[teacher_dir(cfg, data, splits).name]
        teacher, taps_of = live_teacher(cfg, weights, device, sharded=ranks is not None)
    objective = DistillationLoss(
        terms,
        cfg.kd.weights,
        student.tap_channels,
        teacher.tap_channels if teacher is not None else None,
        cfg.student.seg_loss,
        as_dict(cfg.kd),
        channels[1],
    ).to(device)

    compute = maybe_compile(objective, cfg.kd.compile)
    cached = None
    if teacher is not None and cfg.kd.teacher_cache:
        cached = teacher_outputs(teacher, data, outputs_dir(cfg, data, splits))

    def loss_fn(x, y, idx):
        taps = student(x)
        if teacher is None:
            return compute(taps, y)
        if cached is not None:
            return compute(taps, y, cached(idx, device))
        return compute(taps, y, taps_of(x))

    def each_epoch(state: FitState, checkpoint: dict) -> None:
        if log is not None:
            log(epoch_line(state, objective.weights))
        if on_epoch is not None:
            on_epoch(state, checkpoint)

    fit_start = time.perf_counter()
    state = fit(
        student,
        loss_fn,
        data,
        splits.student,
        splits.val,
        fit_settings(cfg, kd=bool(terms)),
        seed,
        extra_modules=objective,
        on_epoch=each_epoch,
        resume=resume,
        name=f"variant {label!r} seed {seed}",
        select=test_loss_selection(cfg, objective.seg, data, splits.test),
        backend=DataParallel(*ranks) if ranks is not None else None,
    )
    run = {
        "val_dice": state.best_val,
        "best_epoch": state.best_epoch,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        **ending(cfg, state.history, state.best_step, state.stopped_early),
    }
    if not evaluate_test:
        return {**run, "history": state.history}
    fit_s = time.perf_counter() - fit_start
    test = evaluate(student, data, splits.test)
    shown = example_slices(data.case, data.masks, splits.test)
    return {
        "variant": label,
        "seed": seed,
        "teacher": teacher_name(cfg),
        "student": student_name(cfg),
        "params": count_parameters(student),
        "data_fraction": cfg.data_fraction,
        "split": cfg.split,
        **{k: test[k] for k in ("dice", "iou", "recall", "precision", "dice_3d")},
        "tp": test["tp"],
        "fp": test["fp"],
        "fn": test["fn"],
        **run,
        "objective": objective.formula(),
        "machine": machine_text(machine()),
        "wall_s": time.perf_counter() - start,
        "data_s": data_s,
        "fit_s": fit_s,
        "history": state.history,
        "examples": pack_masks(predict(student, data, shown)),
        "cases": case_counts(test, data.case_names, data.classes.names),
        **({"weights": pack_weights(student)} if exports_weights(cfg, seed) else {}),
    }


def case_counts(test: dict[str, Any], case_names: list[str], classes: tuple[str, ...]):
    """Each test patient's TP / FP / FN (``segmentation_metrics``' ``volumes``), and with
    several classes one entry per patient and class (its ``class`` named)."""
    if len(classes) == 1:
        return [
            {"case": case_names[vid], "tp": tp, "fp": fp, "fn": fn}
            for vid, tp, fp, fn in test["volumes"]
        ]
    return [
        {"case": case_names[vid], "class": name, "tp": tp, "fp": fp, "fn": fn}
        for vid, counts in test["volume_classes"].items()
        for name, (tp, fp, fn) in zip(classes, counts, strict=True)
    ]


def run_trial_on_workers(
    cfg: DictConfig, variant: str, seed: int, teachers: dict | None
) -> dict[str, Any]:
    """``run_trial`` on ``teacher.workers`` Ray Train workers: the student replicated and
    data-parallel, the teacher sharded by ZeRO-3. Returns rank 0's row."""
    config = {
        "cfg": as_dict(cfg),
        "variant": variant,
        "seed": seed,
        "teachers": ray.put(teachers),
    }
    run = f"trial-{abs(hash((variant, seed, time.time()))):x}"
    result = run_on_workers(_trial_worker, config, cfg, run)
    with result.checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / "row.json").read_text())


def _trial_worker(config: dict) -> None:
    """One worker of ``run_trial_on_workers``."""
    cfg = OmegaConf.create(config["cfg"])
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_trial)))
    rank, world = worker_rank()
    teachers = ray.get(config["teachers"])
    row = run_trial(cfg, config["variant"], config["seed"], teachers, ranks=(rank, world))
    # Ray Train V2 keeps a report's metrics only with a checkpoint: the row travels as one
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            (Path(folder) / "row.json").write_text(json.dumps(row))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({}, checkpoint=checkpoint)

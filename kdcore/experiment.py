"""From a resolved config to data, a cached teacher and one student trial.

The command line (bench/run.py) and every Ray Tune trial call these same functions.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from kdcore.data.msd import list_cases, locate_msd_spleen
from kdcore.data.phantom import write_phantom_dataset
from kdcore.data.slices import SliceData, SliceSettings, load_slices
from kdcore.data.splits import SPLIT_MODES, Splits, make_splits
from kdcore.errors import ConfigError
from kdcore.io import atomic_dir, atomic_path, write_text_atomic
from kdcore.losses import (
    SEG_LOSSES,
    DistillationLoss,
    MultiTaskLoss,
    maybe_compile,
    needs_pairs,
    parse_variant,
)
from kdcore.losses.distillation import term_weight
from kdcore.models import UNet, build_student, build_teacher, count_parameters, freeze, teacher_taps
from kdcore.teacher_outputs import teacher_outputs
from kdcore.training import FitSettings, evaluate, fit

DATASETS = ("phantom", "msd_spleen")
# One row per trial, in this column order (see run_trial).
TRIAL_COLUMNS = (
    "variant",
    "seed",
    "teacher",
    "student",
    "params",
    "data_fraction",
    "split",
    "dice",
    "iou",
    "recall",
    "precision",
    "dice_3d",
    "tp",
    "fp",
    "fn",
    "val_dice",
    "best_epoch",
    "objective",
    "wall_s",
)
Log = Callable[[str], None]


def stable_hash(obj: Any) -> str:
    """Short hash of a JSON-able object (config sections, index arrays as lists)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def as_dict(cfg: DictConfig | dict) -> dict:
    """A plain, resolved dict of a config section."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def check_config(cfg: DictConfig) -> None:
    """Reject bad values before any work starts, with a message naming the problem."""
    if cfg.data.name not in DATASETS:
        raise ConfigError(f"unknown data {cfg.data.name!r}; choose one of {', '.join(DATASETS)}")
    if cfg.split not in SPLIT_MODES:
        raise ConfigError(f"unknown split {cfg.split!r}; choose one of {', '.join(SPLIT_MODES)}")
    if not isinstance(cfg.data_fraction, int | float) or not 0 < cfg.data_fraction <= 1:
        raise ConfigError(f"data_fraction must be in (0, 1], got {cfg.data_fraction}")
    for side in ("teacher", "student"):
        if cfg[side].seg_loss not in SEG_LOSSES:
            raise ConfigError(
                f"unknown {side}.seg_loss {cfg[side].seg_loss!r}; choose one of "
                f"{', '.join(SEG_LOSSES)}"
            )
        FitSettings(**as_dict(cfg[side].fit))
    labels = []
    for variant in cfg.variants:
        label, terms = parse_variant(variant)
        labels.append(label)
        for term in terms:
            term_weight(cfg.kd.weights, term)
        if cfg.student.fit.batch_size < 2 and needs_pairs(terms):
            raise ConfigError(
                f"variant {variant!r} uses contrastive KD, whose negatives are the other samples "
                "of the batch: student.fit.batch_size must be at least 2, got "
                f"{cfg.student.fit.batch_size}"
            )
    for key, values in (("variants", labels), ("seeds", list(cfg.seeds))):
        if not values:
            raise ConfigError(f"{key} is empty: give at least one")
        if len(set(values)) < len(values):
            raise ConfigError(f"{key} lists a value twice: {values}")
    if cfg.kd.teacher_cache and cfg.student.fit.augment:
        raise ConfigError(
            "kd.teacher_cache=true holds the teacher's taps of unaugmented slices, so it "
            "cannot be used with student.fit.augment=true: set one of them to false"
        )
    if cfg.teacher.depth < 2:
        raise ConfigError(f"teacher.depth must be at least 2, got {cfg.teacher.depth}")
    if cfg.image_size % 2**cfg.teacher.depth:
        raise ConfigError(
            f"image_size {cfg.image_size} must be divisible by 2**teacher.depth "
            f"= {2**cfg.teacher.depth}"
        )
    SliceSettings(tuple(cfg.window), cfg.image_size)


def dataset_root(cfg: DictConfig, log: Log = print) -> Path:
    """The MSD-layout folder of the configured dataset, generating the phantom if needed."""
    if cfg.data.name == "msd_spleen":
        return locate_msd_spleen(cfg.data.root, cfg.data.download)
    params = as_dict(cfg.phantom)
    root = Path(cfg.work_dir).absolute() / "data" / f"phantom-{stable_hash(params)}"
    if not (root / "dataset.json").is_file():
        log(f"generating phantom CT: {params['num_patients']} patients -> {root}")
        with atomic_dir(root) as tmp:
            write_phantom_dataset(
                tmp,
                params["num_patients"],
                params["seed"],
                tuple(params["shape"]),
                tuple(params["spacing"]),
            )
    return root


def dataset_label(cfg: DictConfig) -> str:
    """A human name of the dataset and split, e.g. 'phantom (24 patients), patient split'."""
    name = (
        f"phantom CT ({cfg.phantom.num_patients} patients, seed {cfg.phantom.seed})"
        if cfg.data.name == "phantom"
        else "MSD Task09_Spleen"
    )
    split = "patient split" if cfg.split == "patient" else "SLICE split (leaky, as the thesis)"
    return f"{name}, {split}, {cfg.image_size}x{cfg.image_size}"


def prepare_data(cfg: DictConfig, log: Log = print) -> tuple[SliceData, Splits]:
    """Slices of the configured dataset (cached) and their train / val / test split."""
    cases = list_cases(dataset_root(cfg, log))
    data = load_slices(
        cases, SliceSettings(tuple(cfg.window), cfg.image_size), Path(cfg.work_dir) / "cache"
    )
    splits = make_splits(
        data.case,
        cfg.split,
        cfg.split_seed,
        cfg.val_fraction,
        cfg.test_fraction,
        cfg.data_fraction,
    )
    return data, splits


def teacher_name(cfg: DictConfig) -> str:
    """'T1' at the thesis's size, else e.g. 'T1(w16,d4)'."""
    t = cfg.teacher
    return "T1" if (t.width, t.depth) == (64, 4) else f"T1(w{t.width},d{t.depth})"


def student_name(cfg: DictConfig) -> str:
    """'S1' / 'S2' at the thesis's sizes, else e.g. 'S(w8)'."""
    return {16: "S1", 32: "S2"}.get(cfg.student.width, f"S(w{cfg.student.width})")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TeacherRecord:
    """A trained teacher on disk: weights, and its metadata (test metrics, params)."""

    path: Path
    meta: dict[str, Any]


def teacher_dir(cfg: DictConfig, data: SliceData, splits: Splits) -> Path:
    """Cache folder of the teacher, keyed by its config, the data and the training split."""
    key = stable_hash(
        {
            "teacher": as_dict(cfg.teacher),
            "data": data.key,
            "train": splits.train.tolist(),
            "val": splits.val.tolist(),
        }
    )
    return Path(cfg.work_dir).absolute() / "teachers" / key


def load_or_train_teacher(
    cfg: DictConfig, data: SliceData, splits: Splits, log: Log = print
) -> TeacherRecord:
    """The cached teacher for this config and data, trained first if there is none.

    The teacher trains on all training patients; its checkpoint is picked on validation.
    """
    folder = teacher_dir(cfg, data, splits)
    if (folder / "meta.json").is_file():
        log(f"teacher: reusing {folder}")
        return TeacherRecord(folder / "model.pt", json.loads((folder / "meta.json").read_text()))
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.teacher.seed)
    model = build_teacher(cfg.teacher.width, cfg.teacher.depth).to(device)
    objective = MultiTaskLoss(cfg.teacher.seg_loss, cfg.teacher.recon_weight)
    settings = FitSettings(**as_dict(cfg.teacher.fit))
    log(
        f"teacher: training {teacher_name(cfg)} ({count_parameters(model):,} params) on "
        f"{len(splits.train)} slices for {settings.epochs} epochs"
    )
    start = time.perf_counter()

    def progress(state, _checkpoint):
        h = state.history[-1]
        log(
            f"teacher epoch {h['epoch']}/{settings.epochs}: loss {h['train_loss']:.4f} "
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
        on_epoch=progress,
    )
    meta = {
        "name": teacher_name(cfg),
        "params": count_parameters(model),
        "config": as_dict(cfg.teacher),
        "best_epoch": state.best_epoch,
        "val_dice": state.best_val,
        "test": evaluate(model, data, splits.test),
        "wall_s": time.perf_counter() - start,
    }
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.pt") as tmp:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    write_text_atomic(folder / "meta.json", json.dumps(meta, indent=1))
    log(f"teacher: test dice {meta['test']['dice']:.4f}, saved to {folder}")
    return TeacherRecord(folder / "model.pt", meta)


def load_teacher_weights(path: Path) -> dict[str, torch.Tensor]:
    """A teacher's state dict (weights only: nothing in the file is executed)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def frozen_teacher(cfg: DictConfig, weights: dict[str, torch.Tensor], device: torch.device) -> UNet:
    """The teacher built from its config and weights, frozen (``models.freeze``)."""
    model = build_teacher(cfg.teacher.width, cfg.teacher.depth)
    model.load_state_dict(weights)
    return freeze(model.to(device))


def prepare_teacher_outputs(
    cfg: DictConfig, data: SliceData, splits: Splits, weights: dict[str, torch.Tensor], log: Log
) -> None:
    """Write the teacher-output cache once, before trials start reading it."""
    folder = teacher_dir(cfg, data, splits) / "outputs"
    if not (folder / "meta.json").is_file():
        log(f"teacher outputs: caching the taps of {len(data)} slices in {folder}")
    outputs = teacher_outputs(
        frozen_teacher(cfg, weights, resolve_device(cfg.device)), data, folder
    )
    log(f"teacher outputs: {outputs.bytes_per_slice / 1024:.0f} KiB per slice (float16)")


def run_trial(
    cfg: DictConfig,
    variant: str,
    seed: int,
    teacher_weights: dict[str, torch.Tensor] | None,
    on_epoch: Callable | None = None,
    resume: dict | None = None,
) -> dict[str, Any]:
    """Train one student (baseline or KD variant) and return its row of test metrics.

    Baseline and KD variants share the optimiser, schedule, epochs, batches, data subset
    and seed; they differ only in the KD terms of the objective.
    """
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    data, splits = prepare_data(cfg, log=lambda _: None)
    label, terms = parse_variant(variant)
    torch.manual_seed(seed)
    student = build_student(cfg.student.width).to(device)
    teacher = frozen_teacher(cfg, teacher_weights, device) if terms else None
    objective = DistillationLoss(
        terms,
        cfg.kd.weights,
        student.tap_channels,
        teacher.tap_channels if teacher is not None else None,
        cfg.student.seg_loss,
        cfg.kd.temperature,
        cfg.kd.pmd_temperature,
        cfg.kd.cwd_temperature,
    ).to(device)

    compute = maybe_compile(objective, cfg.kd.compile)
    cached = None
    if teacher is not None and cfg.kd.teacher_cache:
        cached = teacher_outputs(teacher, data, teacher_dir(cfg, data, splits) / "outputs")

    def loss_fn(x, y, idx):
        taps = student(x)
        if teacher is None:
            return compute(taps, y)
        if cached is not None:
            return compute(taps, y, cached(idx, device))
        return compute(taps, y, teacher_taps(teacher, x))

    state = fit(
        student,
        loss_fn,
        data,
        splits.student,
        splits.val,
        FitSettings(**as_dict(cfg.student.fit)),
        seed,
        extra_modules=objective,
        on_epoch=on_epoch,
        resume=resume,
    )
    test = evaluate(student, data, splits.test)
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
        "val_dice": state.best_val,
        "best_epoch": state.best_epoch,
        "objective": objective.formula(),
        "wall_s": time.perf_counter() - start,
    }


__all__ = [
    "TRIAL_COLUMNS",
    "TeacherRecord",
    "check_config",
    "dataset_label",
    "frozen_teacher",
    "load_or_train_teacher",
    "load_teacher_weights",
    "prepare_data",
    "prepare_teacher_outputs",
    "run_trial",
]

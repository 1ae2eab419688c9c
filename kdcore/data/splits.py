"""Train / validation / test splits and nested training subsets."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kdcore.errors import ConfigError

SPLIT_MODES = ("patient", "slice")


def split_units(
    num_units: int, seed: int, val_fraction: float, test_fraction: float
) -> dict[str, np.ndarray]:
    """Shuffle ``num_units`` (patients or slices) with ``seed`` into train / val / test.

    Each part gets at least one unit; indices within a part are sorted.
    """
    n_test = max(1, round(num_units * test_fraction))
    n_val = max(1, round(num_units * val_fraction))
    if num_units - n_test - n_val < 1:
        raise ConfigError(
            f"{num_units} units cannot be split into train/val/test with val_fraction="
            f"{val_fraction} and test_fraction={test_fraction}: add data or lower the fractions"
        )
    order = np.random.default_rng(seed).permutation(num_units)
    return {
        "test": np.sort(order[:n_test]),
        "val": np.sort(order[n_test : n_test + n_val]),
        "train": np.sort(order[n_test + n_val :]),
    }


def nested_subset(units: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The first ceil(fraction * n) units of a seeded shuffle of ``units``.

    The shuffle depends only on ``seed`` and ``units``, so for one seed the subsets are
    nested: fraction 0.25 lies inside 0.5, which lies inside 1.0.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"data_fraction must be in (0, 1], got {fraction}")
    order = np.random.default_rng(seed).permutation(len(units))
    keep = max(1, math.ceil(fraction * len(units)))
    return np.sort(np.asarray(units)[order[:keep]])


@dataclass
class Splits:
    """Slice indices of each part. ``student`` is the data-fraction subset of ``train``.

    In ``patient`` mode no patient appears in two of train / val / test. ``slice`` mode
    reproduces the thesis's leaky split (the same patient in train and test).
    """

    mode: str
    train: np.ndarray
    student: np.ndarray
    val: np.ndarray
    test: np.ndarray


def make_splits(
    slice_case: np.ndarray,
    mode: str = "patient",
    seed: int = 42,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    data_fraction: float = 0.5,
    subset_seed: int | None = None,
) -> Splits:
    """Split slices whose volume indices are ``slice_case`` (N,) by patient or by slice.

    The student subset takes ``data_fraction`` of the training patients (or slices),
    drawn with ``subset_seed`` (default: ``seed``); subsets of one seed are nested.
    """
    subset_seed = seed if subset_seed is None else subset_seed
    if mode not in SPLIT_MODES:
        raise ConfigError(f"unknown split {mode!r}; choose one of {', '.join(SPLIT_MODES)}")
    if mode == "slice":
        parts = split_units(len(slice_case), seed, val_fraction, test_fraction)
        student = nested_subset(parts["train"], data_fraction, subset_seed)
        return Splits(mode, parts["train"], student, parts["val"], parts["test"])
    cases = np.unique(slice_case)
    parts = {
        k: cases[v] for k, v in split_units(len(cases), seed, val_fraction, test_fraction).items()
    }
    student_cases = nested_subset(parts["train"], data_fraction, subset_seed)

    def slices_of(case_ids: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(slice_case, case_ids))

    return Splits(
        mode,
        slices_of(parts["train"]),
        slices_of(student_cases),
        slices_of(parts["val"]),
        slices_of(parts["test"]),
    )


# What to change when a part of the split has no foreground, by part.
_FOREGROUND_FIX = {
    "train": "use another split_seed, lower val_fraction / test_fraction, or add labelled cases",
    "val": "use another split_seed, raise val_fraction, or add labelled cases",
    "test": "use another split_seed, raise test_fraction, or add labelled cases",
    "student": "raise data_fraction or use another split_seed (or subset seed)",
}
_WHY = {
    "train": "the models would learn nothing to segment",
    "val": "no checkpoint could be chosen on it (its Dice is undefined)",
    "test": "its metrics would be undefined",
    "student": "the student would learn nothing to segment",
}


def check_foreground(
    has_fg: np.ndarray, splits: Splits, slice_case: np.ndarray, case_names: list[str]
) -> None:
    """Every part of ``splits`` (train, student, val, test) holds a foreground voxel.

    has_fg: (N,) whether each slice holds one; slice_case: (N,) index into
    ``case_names`` of each slice's volume. ConfigError naming the empty part, its
    patients and what to do.
    """
    for part in ("train", "student", "val", "test"):
        idx = getattr(splits, part)
        if has_fg[idx].any():
            continue
        cases = [case_names[c] for c in np.unique(slice_case[idx])]
        shown = ", ".join(cases[:6]) + (", ..." if len(cases) > 6 else "")
        units = f"{len(idx)} slices of " if splits.mode == "slice" else ""
        name = "the student's training subset" if part == "student" else f"the {part} split"
        raise ConfigError(
            f"{name} ({units}{len(cases)} patient{'s' if len(cases) > 1 else ''}: {shown}) "
            f"has no foreground voxel: {_WHY[part]}; {_FOREGROUND_FIX[part]}"
        )


def check_classes(
    masks: np.ndarray,
    splits: Splits,
    names: tuple[str, ...],
    slice_case: np.ndarray,
    case_names: list[str],
) -> None:
    """With several classes, every class appears in every part of ``splits``.

    masks: (N, H, W) class indices (class k is ``names[k - 1]``). ConfigError naming the
    class, the part and what to do (or to merge or drop the class in data.labels).
    """
    if len(names) < 2:
        return
    flat = np.asarray(masks).reshape(len(masks), -1)
    for k, name in enumerate(names, start=1):
        has = (flat == k).any(axis=1)
        try:
            check_foreground(has, splits, slice_case, case_names)
        except ConfigError as err:
            raise ConfigError(
                f"class {name!r}: {err} (or merge the class with another, or drop it, in "
                "data.labels)"
            ) from None


def example_slices(
    slice_case: np.ndarray, masks: np.ndarray, idx: np.ndarray, count: int = 4
) -> np.ndarray:
    """Slices to show: of each of the first ``count`` patients among slices ``idx``, the
    slice with the largest labelled area, all classes together (sorted slice indices)."""
    chosen = []
    for case in np.unique(slice_case[idx])[:count]:
        own = idx[slice_case[idx] == case]
        areas = (np.asarray(masks[own]).reshape(len(own), -1) > 0).sum(1)
        chosen.append(own[int(np.argmax(areas))])
    return np.sort(np.asarray(chosen, dtype=np.int64))

"""The gate: one check of the whole resolved config before any work starts.

``check_config`` checks every key of ``configs/`` against a rule (``RULES``: types and
ranges), then the enumerations and the rules that span keys, then the outside world
(``results_dir`` writable, the device present, ``ray.address`` reachable). A test
composes every shipped config and checks that each key has its rule.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from kdcore.axes import NOT_AXES, axis_cells, axis_settings, cell_config, cell_labels, grid_axes
from kdcore.data.phantom.appearance import DIFFICULTIES, PHASES
from kdcore.data.prepare import slice_settings
from kdcore.data.sources import DATASETS, phantom_appearance
from kdcore.data.splits import SPLIT_MODES
from kdcore.errors import ConfigError
from kdcore.losses import (
    METHODS,
    SEG_LOSSES,
    needs_pairs,
    parse_term,
    parse_variant,
    temperature_keys,
    term_weight,
)
from kdcore.losses.contrastive import HEADS
from kdcore.losses.prediction_map import PMD_MODES
from kdcore.models import TEACHERS
from kdcore.models.teachers import teacher_arch
from kdcore.protocols import PROTOCOLS, SELECTIONS
from kdcore.rows import history_name
from kdcore.settings import PATH_KEYS, as_dict, leaves
from kdcore.tracking import SETTINGS as TRACKING_SETTINGS
from kdcore.training import OPTIMIZERS, SCHEDULES

DEVICES = ("auto", "cpu", "cuda")
RAY_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Rule:
    """What a good value of a key is: ``what`` for the message, ``ok`` to test it."""

    what: str
    ok: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def integer(low: int) -> Rule:
    """An integer >= ``low``."""
    return Rule(f"an integer >= {low}", lambda v: _is_int(v) and v >= low)


def number(
    low: float, high: float | None = None, *, low_open: bool, high_open: bool = False
) -> Rule:
    """A finite number above ``low`` (and below ``high``), each end open or closed."""
    if high is None:
        what = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        above = v > low if low_open else v >= low
        return above and (high is None or (v < high if high_open else v <= high))

    return Rule(what, ok)


def one_of(*choices: Any) -> Rule:
    """One of ``choices``."""
    return Rule(f"one of {', '.join(map(str, choices))}", lambda v: v in choices)


def optional(rule: Rule) -> Rule:
    """null, or a value that passes ``rule``."""
    return Rule(f"null or {rule.what}", lambda v: v is None or rule.ok(v))


def list_of(rule: Rule, length: int | None = None, min_length: int = 0) -> Rule:
    """A list of ``length`` items (or at least ``min_length``), each passing ``rule``."""
    count = f"{length}" if length else f"at least {min_length}" if min_length else "any number of"
    return Rule(
        f"a list of {count} items, each {rule.what}",
        lambda v: (
            isinstance(v, list | tuple)
            and (len(v) == length if length else len(v) >= min_length)
            and all(rule.ok(item) for item in v)
        ),
    )


BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))
TEXT = Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v))
POSITIVE = number(0, low_open=True)
NON_NEGATIVE = number(0, low_open=False)
SEED = integer(0)
PROBABILITY = number(0, 1, low_open=False)


def ordered_pair(item: Rule, what: str) -> Rule:
    """[low, high]: two values that pass ``item``, low <= high; ``what`` for the message."""
    return Rule(what, lambda v: list_of(item, length=2).ok(v) and v[0] <= v[1])


FACTOR_RANGE = ordered_pair(POSITIVE, "[low, high] with 0 < low <= high")
UNIT_RANGE = ordered_pair(PROBABILITY, "[low, high] with 0 <= low <= high <= 1")


def probabilities(n: int) -> Rule:
    """A list of ``n`` probabilities that sum to 1."""
    return Rule(
        f"a list of {n} probabilities in [0, 1] that sum to 1",
        lambda v: list_of(PROBABILITY, length=n).ok(v) and math.isclose(sum(v), 1.0, abs_tol=1e-6),
    )


FIT_RULES: dict[str, Rule] = {
    "epochs": integer(1),
    "batch_size": integer(1),
    "optimizer": one_of(*OPTIMIZERS),
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "betas": list_of(number(0, 1, low_open=False, high_open=True), length=2),
    "momentum": number(0, 1, low_open=False, high_open=True),
    "schedule": one_of(*SCHEDULES),
    "augment": BOOLEAN,
    "channels_last": BOOLEAN,
}

# Every key of configs/ (after composition), with what its value must be.
RULES: dict[str, Rule] = {
    "results_dir": TEXT,
    "work_dir": TEXT,
    "device": one_of(*DEVICES),
    "window": list_of(number(-1e5, 1e5, low_open=False), length=2),
    "image_size": integer(8),
    "split": one_of(*SPLIT_MODES),
    "split_seed": SEED,
    "val_fraction": number(0, 1, low_open=True, high_open=True),
    "test_fraction": number(0, 1, low_open=True, high_open=True),
    "data_fraction": number(0, 1, low_open=True),
    "data.name": one_of(*DATASETS),
    "data.root": TEXT,
    "data.download": BOOLEAN,
    "data.task": TEXT,
    "data.foreground": optional(list_of(integer(0), min_length=1)),
    "data.labels": Rule(
        "null, or a mapping of class names to a label value or a list of them, "
        "e.g. {liver: [1, 2], spleen: 3}",
        lambda v: v is None or (isinstance(v, dict) and len(v) > 0),
    ),
    "data.background": list_of(integer(0)),
    "data.pixel_mm": optional(POSITIVE),
    "phantom.num_patients": integer(3),
    "phantom.seed": SEED,
    "phantom.shape": list_of(integer(8), length=3),
    "phantom.spacing": list_of(POSITIVE, length=3),
    "phantom.difficulty": one_of(*DIFFICULTIES),
    "phantom.phases": optional(probabilities(len(PHASES))),
    "phantom.dose": optional(FACTOR_RANGE),
    "phantom.noise_hu": optional(NON_NEGATIVE),
    "phantom.blur_mm": optional(FACTOR_RANGE),
    "phantom.slice_mm": optional(FACTOR_RANGE),
    "phantom.fov_mm": optional(FACTOR_RANGE),
    "phantom.fov_margin": optional(FACTOR_RANGE),
    "phantom.off_centre_mm": optional(NON_NEGATIVE),
    "phantom.scan_shift_mm": optional(NON_NEGATIVE),
    "phantom.habitus": optional(UNIT_RANGE),
    "phantom.spleen_size": optional(probabilities(3)),
    **{
        f"phantom.{key}": optional(PROBABILITY)
        for key in ("fatty_liver", "lesions_spleen", "lesions_liver", "streaks", "table")
    },
    "profile_name": TEXT,
    "ablation_name": optional(TEXT),
    "axes": Rule(
        "null, or a mapping of config keys to non-empty lists of values, "
        "e.g. {data_fraction: [0.25, 1.0]}",
        lambda v: (
            v is None
            or (isinstance(v, dict) and all(isinstance(x, list) and x for x in leaves(v).values()))
        ),
    ),
    "only_in": Rule(
        "null, or a mapping of variant labels to {axis: value or [values]}",
        lambda v: (
            v is None
            or (isinstance(v, dict) and all(isinstance(w, dict) and w for w in v.values()))
        ),
    ),
    "reference_table": Rule(
        "null, or {source: text, rows: [mappings of column: value]}",
        lambda v: (
            v is None
            or (
                isinstance(v, dict)
                and isinstance(v.get("source"), str)
                and isinstance(v.get("rows"), list)
                and all(isinstance(r, dict) for r in v["rows"])
            )
        ),
    ),
    "variants": list_of(TEXT, min_length=1),
    "seeds": list_of(SEED, min_length=1),
    "vary_subset": BOOLEAN,
    "teacher.width": integer(1),
    "teacher.depth": integer(2),
    "teacher.seed": SEED,
    "teacher.seg_loss": one_of(*SEG_LOSSES),
    "teacher.recon_weight": NON_NEGATIVE,
    "teacher.arch": one_of(*TEACHERS),
    "teacher.t2.width": integer(1),
    "teacher.t2.blocks": list_of(integer(1), length=3),
    "teacher.t2.hidden": integer(1),
    "teacher.t2.layers": integer(1),
    "teacher.t2.heads": integer(1),
    "teacher.t2.mlp": integer(1),
    "teacher.workers": integer(1),
    "teacher.zero_stage": one_of(0, 1, 2, 3),
    "student.width": integer(1),
    "student.seg_loss": one_of(*SEG_LOSSES),
    "protocol.name": one_of(*PROTOCOLS),
    "protocol.baseline_fit": Rule("null, or a mapping of student.fit keys", lambda v: v is None),
    "protocol.select": one_of(*SELECTIONS),
    "kd.heads": one_of(*HEADS),
    "kd.pmd_mode": one_of(*PMD_MODES),
    "tune": BOOLEAN,
    "tuning.trials_per_knob": integer(1),
    "tuning.seeds": list_of(SEED, min_length=1),
    "tuning.seed": SEED,
    "tuning.lr_factor": FACTOR_RANGE,
    "tuning.weight_factor": FACTOR_RANGE,
    "tuning.temperature_factor": FACTOR_RANGE,
    "kd.compile": BOOLEAN,
    "kd.teacher_cache": BOOLEAN,
    "kd.weights.*": NON_NEGATIVE,
    "ray.address": optional(TEXT),
    "ray.storage": optional(TEXT),
    "ray.cpus_per_trial": POSITIVE,
    "ray.gpus_per_trial": NON_NEGATIVE,
    "ray.max_concurrent_trials": optional(integer(1)),
    "ray.checkpoint_every": integer(0),
    "ray.verbose": one_of(0, 1, 2, 3),
    **{f"tracking.{key}": Rule(what, ok) for key, (what, ok) in TRACKING_SETTINGS.items()},
    **{f"teacher.fit.{key}": rule for key, rule in FIT_RULES.items()},
    **{f"student.fit.{key}": rule for key, rule in FIT_RULES.items() if key != "epochs"},
    "cost.enabled": BOOLEAN,
    "cost.runs": integer(3),
    "cost.warmup": integer(0),
    "export": BOOLEAN,
    "stats.alpha": number(0, 1, low_open=True, high_open=True),
    "stats.power": number(0, 1, low_open=True, high_open=True),
    "stats.converged_share": PROBABILITY,
    "stats.collapse": PROBABILITY,
    "thesis_steps": integer(1),
    "budget.steps": optional(integer(1)),
    "budget.epochs": optional(integer(1)),
    "budget.eval_every": optional(integer(1)),
    "budget.patience": optional(integer(1)),
    "budget.min_steps": integer(0),
    "budget.convergence.window": number(0, 1, low_open=True),
    "budget.convergence.tolerance": POSITIVE,
}
# Keys of earlier versions, with where their setting went.
MOVED = {
    "student.fit.epochs": "a student's budget is budget.steps (optimiser steps, the same for "
    "every arm) or, the thesis's way, budget.epochs with budget.steps=null",
}


def rule_for(key: str) -> Rule | None:
    """The rule of a dotted key (``kd.weights.<term>`` share one; temperatures are > 0)."""
    if key in RULES:
        return RULES[key]
    if key.startswith("kd.weights."):
        return RULES["kd.weights.*"]
    if key.startswith("protocol.baseline_fit."):  # the thesis's own baseline optimiser
        return FIT_RULES.get(key.removeprefix("protocol.baseline_fit."))
    if key.startswith("kd.") and key.removeprefix("kd.") in temperature_keys():
        return POSITIVE
    return None


def check_config(cfg: DictConfig, outside: bool = True) -> None:
    """The gate: raise ConfigError naming the first bad value and what it must be.

    Runs before any work starts. ``outside=False`` skips the checks of the machine
    (results_dir, device, Ray address), e.g. for configs composed in tests.
    """
    _check_values(cfg)
    if outside:  # a missing GPU first: it is what the other device settings depend on
        _check_device(cfg)
    _check_paths(cfg)
    _check_axes(cfg)
    _check_only_in(cfg)
    for cell in axis_cells(cfg):  # every cell of the grid is a config of its own
        cell_cfg = cell_config(cfg, cell)
        _check_values(cell_cfg)
        _check_variants(cell_cfg)
        _check_cross_keys(cell_cfg)
    _check_file_names(cfg)
    if outside:
        for key in ("results_dir", "work_dir"):
            check_writable_dir(Path(cfg[key]), key)
        address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
        if address:
            check_ray_address(address)


def _check_axes(cfg: DictConfig) -> None:
    known = leaves(cfg)

    def settable(key: str) -> bool:  # a leaf, or a section such as protocol.baseline_fit
        return not key.startswith(NOT_AXES) and (
            key in known or any(k.startswith(f"{key}.") for k in known)
        )

    for axis, values in grid_axes(cfg).items():
        if len({repr(v) for v in values}) < len(values):
            raise ConfigError(f"axes: {axis} lists a value twice: {values}")
        bundle = all(isinstance(v, dict) for v in values)
        if bundle and axis not in known:
            labels = [v.get("label") for v in values]
            if not all(isinstance(label, str) and label for label in labels):
                raise ConfigError(
                    f"axes: every value of the axis {axis!r} sets several keys and needs a "
                    "label naming it, e.g. {label: patient split, split: patient}"
                )
            if len(set(labels)) < len(labels):
                raise ConfigError(f"axes: {axis} uses a label twice: {labels}")
        for value in values:
            for key, setting in axis_settings(axis, value).items():
                if not settable(key):
                    raise ConfigError(
                        f"axes: {key!r} is not a setting a grid can vary; an axis is a config "
                        "key such as data_fraction, student.width, teacher.width or "
                        "kd.weights.pmd (variants and seeds have keys of their own)"
                    )
                rule = rule_for(key)
                if key in known and rule is not None and not rule.ok(setting):
                    raise ConfigError(
                        f"axes: every value of {key} must be {rule.what}, got {setting!r}"
                    )


def _check_only_in(cfg: DictConfig) -> None:
    """Every variant ``only_in`` names is one of the grid's, and runs in some cell."""
    if not cfg.only_in:
        return
    labels = [parse_variant(v).label for v in cfg.variants]
    axes = grid_axes(cfg)
    for label, where in as_dict(cfg.only_in).items():
        if label not in labels:
            raise ConfigError(
                f"only_in names {label!r}, which is not a variant of this grid: {', '.join(labels)}"
            )
        for axis, wanted in where.items():
            if axis not in axes:
                raise ConfigError(
                    f"only_in: {label!r} names the axis {axis!r}, which this grid does not "
                    f"have ({', '.join(axes) or 'no axes'})"
                )
            values = [v["label"] if isinstance(v, dict) else v for v in axes[axis]]
            for value in wanted if isinstance(wanted, list) else [wanted]:
                if value not in values:
                    raise ConfigError(
                        f"only_in: {label!r} wants {axis}={value!r}, not one of its values {values}"
                    )


def _check_values(cfg: DictConfig) -> None:
    for key, value in leaves(cfg).items():
        rule = rule_for(key)
        if key in MOVED:
            raise ConfigError(f"{key} is not a setting any more: {MOVED[key]}")
        if rule is None:
            raise ConfigError(f"{key} is not a setting this suite knows: remove it")
        if not rule.ok(value):
            raise ConfigError(f"{key} must be {rule.what}, got {value!r}")


def _check_variants(cfg: DictConfig) -> None:
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
        if len(set(values)) < len(values):
            raise ConfigError(f"{key} lists a value twice: {values}")
    for term in cfg.kd.weights:
        if term != "seg" and term not in METHODS:
            parse_term(term)  # a weight for an unknown term is a typo


def _check_cross_keys(cfg: DictConfig) -> None:
    slice_settings(cfg, read_manifest=False)  # window order, label values in two places
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise ConfigError(
            f"val_fraction + test_fraction must be below 1 to leave training data, got "
            f"{cfg.val_fraction} + {cfg.test_fraction}"
        )
    teacher_arch(cfg).check(cfg)  # the sizes its architecture needs
    phantom_appearance(OmegaConf.to_container(cfg.phantom, resolve=True))
    if (cfg.budget.steps is None) == (cfg.budget.epochs is None):
        raise ConfigError(
            "set exactly one of budget.steps (optimiser steps) and budget.epochs (passes over "
            f"the student's slices), the other null; got steps={cfg.budget.steps}, "
            f"epochs={cfg.budget.epochs}"
        )
    if cfg.kd.teacher_cache and cfg.student.fit.augment:
        raise ConfigError(
            "kd.teacher_cache=true holds the teacher's taps of unaugmented slices, so it "
            "cannot be used with student.fit.augment=true: set one of them to false"
        )
    if cfg.device == "cuda" and not cfg.ray.gpus_per_trial:
        raise ConfigError(
            "device=cuda but ray.gpus_per_trial=0 gives the trials no GPU: set "
            "ray.gpus_per_trial (e.g. 0.25 to share one GPU between four trials)"
        )


NAME_MAX = 255  # bytes in one file or folder name (Linux, macOS)
PATH_MAX = 4096  # bytes in a whole path (Linux)


def _check_paths(cfg: DictConfig) -> None:
    """Folders whose names the file system takes, and that fit in one line of a table."""
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, str):
            continue
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ConfigError(
                f"{key} {value!r} holds a newline or another control character: choose a "
                "path without one"
            )
        long = [part for part in Path(value).parts if len(part.encode()) > NAME_MAX]
        if long:
            raise ConfigError(
                f"{key} has a folder name of {len(long[0].encode())} bytes "
                f"({long[0][:40]}...); file systems allow at most {NAME_MAX}: choose a "
                "shorter path"
            )
        if len(str(Path(value).absolute()).encode()) > PATH_MAX - 2 * NAME_MAX:
            raise ConfigError(
                f"{key} is {len(value.encode())} bytes long, too long for the files the "
                f"suite writes under it (a path may have at most {PATH_MAX}): choose a "
                "shorter path"
            )


def _check_file_names(cfg: DictConfig) -> None:
    """Every file a table will hold has a name the file system takes: a trial's history
    is named by its axis values, its variant's label and its seed."""
    axes = list(grid_axes(cfg))
    seed = max(cfg.seeds)
    for cell in axis_cells(cfg):
        for variant in cfg.variants:
            row = {**cell_labels(cell), "variant": parse_variant(variant).label, "seed": seed}
            name = history_name(row, axes)
            if len(name.encode()) > NAME_MAX:
                raise ConfigError(
                    f"variant {variant[:40]!r}... makes a file name of {len(name.encode())} "
                    f"bytes ({name[:40]}...), over the file system's {NAME_MAX}: give it a "
                    "shorter label (label:terms)"
                )


def _check_device(cfg: DictConfig) -> None:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device=cuda but this machine has no usable CUDA GPU (torch "
            f"{torch.__version__}): use device=auto or device=cpu"
        )


def check_writable_dir(path: Path, key: str) -> None:
    """``path`` (the setting ``key``) is, or can become, a writable folder: checked by
    creating and removing a file in it, or in its nearest existing parent, so that nothing
    is left behind."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key} {path} is a file, not a folder: choose another path")
    probe = path.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key} {path} lies under the file {probe}: choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".kdbench-probe-"):
            pass
    except OSError as err:
        raise ConfigError(
            f"{key} {path} is not writable ({err.strerror}): choose another path"
        ) from None


def check_ray_address(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """The Ray cluster at ``address`` answers on its port within ``timeout_s`` seconds.

    ``auto`` is the cluster last started on this machine (``ray start``); ``local``
    starts a new one, so it needs no check.
    """
    if address == "local":
        return
    if address.startswith(("http://", "https://")):
        raise ConfigError(
            f"ray.address {address} is a dashboard / job-submission address: give the "
            "cluster's GCS address (host:6379) or a Ray client address (ray://host:10001)"
        )
    hostport = address.removeprefix("ray://")
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            hostport = canonicalize_bootstrap_address("auto")
        except Exception:  # Ray's own lookup failed: treat as no cluster
            hostport = None
        if not hostport:
            raise ConfigError(
                "ray.address=auto but no running Ray cluster was found on this machine: "
                "start one with `ray start --head`, or leave ray.address unset for a local Ray"
            )
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"ray.address {address!r} is not host:port, ray://host:port, auto or local"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError(
            f"the Ray cluster at {address} did not answer within {timeout_s:g}s "
            f"({err.strerror or err}): start it, fix ray.address (or RAY_ADDRESS), or leave "
            "both unset for a local Ray"
        ) from None

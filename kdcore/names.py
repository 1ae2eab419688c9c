"""Names derived from a config: of the data set, the protocol, and result tables.

A table's folder is named by the settings that tell tables apart, so a run with other
settings writes beside the default table and rerunning a command replaces only its own:
``<results_dir>/<ablation>/<profile>-<data>-<teacher>-<student>-frac<f>-<split>-<protocol>-<hash>``.
The hash covers every setting that changes results, so settings without a place in the
readable part (a temperature, a weight, the seeds) get their own table too.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kdcore.axes import varied_keys
from kdcore.data.prepare import classes_of
from kdcore.data.sources import data_source
from kdcore.models import student_name, teacher_name, teacher_settings
from kdcore.protocols import SELECT_TEST_LOSS
from kdcore.settings import as_dict, stable_hash

# Settings that change how fast or where a job runs, not its results (the teacher's
# workers change float reduction order, as kd.compile does, not the maths).
OPERATIONAL = (
    "results_dir",
    "work_dir",
    "device",
    "ray",
    "data.root",
    "data.download",
    "kd.compile",
    "kd.teacher_cache",
    "teacher.workers",
    "teacher.zero_stage",
    "tracking",
    "cost",
    "export",
)
# Settings added after results were made, at the value that does what was done before
# the setting existed: left out of hashes and keys at that value, so the tables and
# stored trials made before keep their names and are still found.
NEUTRAL = {"data.labels": None, "student.fit.channels_last": False}


def drop_neutral(settings: dict, cfg: DictConfig) -> None:
    """Remove from ``settings`` (``cfg`` as a dict) each ``NEUTRAL`` key at its value."""
    for dotted, value in NEUTRAL.items():
        if OmegaConf.select(cfg, dotted, default=value) == value:
            section, _, leaf = dotted.rpartition(".")
            node = settings
            for part in section.split(".") if section else []:
                node = node.get(part, {})
            node.pop(leaf, None)


def dataset_label(cfg: DictConfig) -> str:
    """A human name of the dataset and split, e.g. 'phantom CT, standard (40 patients, seed
    0), ...'."""
    name = data_source(cfg).label(cfg)
    split = "patient split" if cfg.split == "patient" else "SLICE split (leaky, as the thesis)"
    return f"{name}, {split}, {cfg.image_size}x{cfg.image_size}"


def replicates_label(cfg: DictConfig) -> str:
    """What varies between the replicates (seeds) of a table."""
    if cfg.vary_subset:
        return (
            "Replicates differ in initialisation, batch order and the student's training "
            "subset (each seed draws its own); the test patients are the same for every seed."
        )
    return (
        "Replicates differ in initialisation and batch order only: the student's training "
        "subset and the test patients are the same for every seed."
    )


PROTOCOL_KEYS = ("split", "protocol.", "kd.heads", "kd.pmd_mode")


def protocol_label(cfg: DictConfig) -> str:
    """What the table's protocol is, and each way it departs from the fair one (and
    whether the grid's axes change it from row to row)."""
    varied = sorted(k for k in varied_keys(cfg) if k.startswith(PROTOCOL_KEYS))
    rows = f" The grid's axes change {', '.join(varied)} from row to row." if varied else ""
    return _protocol_departures(cfg) + rows


def _protocol_departures(cfg: DictConfig) -> str:
    fit = cfg.student.fit
    departures = []
    if cfg.split == "slice":
        departures.append("a SLICE split (a patient's slices in both train and test)")
    if cfg.protocol.baseline_fit:
        base = {**as_dict(fit), **as_dict(cfg.protocol.baseline_fit)}
        departures.append(
            f"baselines trained with {base['optimizer']} lr {base['lr']:g} batch "
            f"{base['batch_size']}, KD runs with {fit.optimizer} lr {fit.lr:g} batch "
            f"{fit.batch_size}"
        )
    if cfg.protocol.select == SELECT_TEST_LOSS:
        departures.append("checkpoints chosen by the segmentation loss on the TEST set")
    if cfg.kd.heads == "random":
        departures.append("InfoNCE projection heads re-created untrained at every step")
    if cfg.kd.pmd_mode == "reference":
        departures.append("the prediction-map loss as the reference computed it (always 0)")
    if not departures:
        return (
            f"Protocol: {cfg.protocol.name}. Baseline and KD variants share optimiser, "
            "schedule, budget, batches, data and seed; they differ only in the KD terms. "
            "Checkpoints chosen on validation Dice."
        )
    return (
        f"Protocol: {cfg.protocol.name.upper()}, which departs from the fair protocol with "
        + "; ".join(departures)
        + ". Differences from the baseline mix distillation with these departures."
    )


def budget_label(cfg: DictConfig) -> str:
    """How long each student trained, and how convergence was judged."""
    b = cfg.budget
    varied = sorted(k for k in varied_keys(cfg) if k.startswith("budget."))
    if b.steps is not None:
        size = (
            f"{b.steps:,} optimiser steps per run, the same for every arm whatever its data "
            "fraction or batch size"
        )
    else:
        size = (
            f"{b.epochs} passes over each run's training slices (the thesis's way: fewer "
            "slices get fewer optimiser steps)"
        )
    every = f"every {b.eval_every} steps" if b.eval_every else "after every pass"
    stop = (
        f"early stopping after {b.patience} steps without a better validation Dice (not "
        f"before step {b.min_steps})"
        if b.patience
        else "no early stopping"
    )
    c = b.convergence
    rows = f" The grid's axes change {', '.join(varied)} from row to row." if varied else ""
    return (
        f"Budget: {size}; validation {every}; {stop}; a "
        f"{cfg.student.fit.schedule} learning-rate schedule over the budget. A run converged "
        f"when it stopped early or the best validation Dice of its last {c.window:.0%} of "
        f"steps beat the best before them by less than {c.tolerance:g} Dice "
        f"point{'' if c.tolerance == 1 else 's'}.{rows}"
    )


def results_hash(cfg: DictConfig) -> str:
    """Hash of every setting that changes results (all but ``OPERATIONAL``)."""
    settings = {**as_dict(cfg), "teacher": teacher_settings(cfg)}
    drop_neutral(settings, cfg)
    for key in OPERATIONAL:
        section, _, leaf = key.rpartition(".")
        (settings.get(section, {}) if section else settings).pop(leaf, None)
    return stable_hash(settings)[:6]


def data_name(cfg: DictConfig) -> str:
    """``data.name`` (and ``data.task``), with the number of classes when there are
    several: 'phantom-5class', 'msd-Task03_Liver-all-labels'."""
    name = "-".join(str(p) for p in (cfg.data.name, cfg.data.get("task")) if p)
    if cfg.data.get("labels") is None and cfg.data.get("foreground") is None:
        return f"{name}-all-labels"
    classes = classes_of(cfg, read_manifest=False)
    return name if classes.binary else f"{name}-{len(classes.names)}class"


def table_settings(cfg: DictConfig) -> dict[str, str | float]:
    """The settings that name a table: profile, data, teacher, student, data fraction,
    split, and the hash of all the others. A setting that is a grid axis is 'axis'."""
    axes = varied_keys(cfg)

    def unless_axis(keys: set[str], value: str | float) -> str | float:
        return "axis" if keys & axes else value

    return {
        "profile": cfg.profile_name,
        "data": data_name(cfg),
        "teacher": "axis"
        if any(k.startswith("teacher.") and k not in OPERATIONAL for k in axes)
        else teacher_name(cfg),
        "student": unless_axis({"student.width"}, student_name(cfg)),
        "fraction": unless_axis({"data_fraction"}, cfg.data_fraction),
        "split": unless_axis({"split"}, cfg.split),
        "protocol": cfg.protocol.name,
        "hash": results_hash(cfg),
    }


def table_name(cfg: DictConfig) -> str:
    """E.g. 'quick-phantom-T1w16d4-S1-frac0.5-patient-fair-1a2b3c', or with data_fraction as a
    grid axis 'quick-phantom-T1w16d4-S1-frac-axis-patient-...' (see the module docstring)."""
    s = table_settings(cfg)
    squeeze = str.maketrans("", "", "(),")
    teacher = "T-axis" if s["teacher"] == "axis" else s["teacher"].translate(squeeze)
    student = "S-axis" if s["student"] == "axis" else s["student"].translate(squeeze)
    fraction = "frac-axis" if s["fraction"] == "axis" else f"frac{s['fraction']:g}"
    split = "split-axis" if s["split"] == "axis" else s["split"]
    tuned = ["tuned"] if cfg.tune else []
    parts = [s["profile"], s["data"], teacher, student, fraction, split, s["protocol"], *tuned]
    parts.append(s["hash"])
    return "-".join(parts)


def table_dir(cfg: DictConfig) -> Path:
    """The folder of this config's table: ``results_dir/<ablation or grid>/<table_name>``."""
    return Path(cfg.results_dir) / (cfg.ablation_name or "grid") / table_name(cfg)

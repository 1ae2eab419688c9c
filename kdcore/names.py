"""Names derived from a config: of networks, of the data set, and of result tables.

A table's folder is named by the settings that tell tables apart, so a run with other
settings writes beside the default table and rerunning a command replaces only its own:
``<results_dir>/<ablation>/<profile>-<data>-<teacher>-<student>-frac<f>-<split>-<hash>``.
The hash covers every setting that changes results, so settings without a place in the
readable part (a temperature, a weight, the seeds) get their own table too.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kdcore.config import as_dict, grid_axes, stable_hash

# Settings that change how fast or where a job runs, not its results.
OPERATIONAL = (
    "results_dir",
    "work_dir",
    "device",
    "ray",
    "data.root",
    "data.download",
    "kd.compile",
    "kd.teacher_cache",
)


def teacher_name(cfg: DictConfig) -> str:
    """'T1' at the thesis's size, else e.g. 'T1(w16,d4)'."""
    t = cfg.teacher
    return "T1" if (t.width, t.depth) == (64, 4) else f"T1(w{t.width},d{t.depth})"


def student_name(cfg: DictConfig) -> str:
    """'S1' / 'S2' at the thesis's sizes, else e.g. 'S(w8)'."""
    return {16: "S1", 32: "S2"}.get(cfg.student.width, f"S(w{cfg.student.width})")


def dataset_label(cfg: DictConfig) -> str:
    """A human name of the dataset and split, e.g. 'phantom CT (20 patients, seed 0), ...'."""
    name = (
        f"phantom CT ({cfg.phantom.num_patients} patients, seed {cfg.phantom.seed})"
        if cfg.data.name == "phantom"
        else "MSD Task09_Spleen"
    )
    split = "patient split" if cfg.split == "patient" else "SLICE split (leaky, as the thesis)"
    return f"{name}, {split}, {cfg.image_size}x{cfg.image_size}"


def results_hash(cfg: DictConfig) -> str:
    """Hash of every setting that changes results (all but ``OPERATIONAL``)."""
    settings = as_dict(cfg)
    for key in OPERATIONAL:
        section, _, leaf = key.rpartition(".")
        (settings.get(section, {}) if section else settings).pop(leaf, None)
    return stable_hash(settings)[:6]


def table_settings(cfg: DictConfig) -> dict[str, str | float]:
    """The settings that name a table: profile, data, teacher, student, data fraction,
    split, and the hash of all the others. A setting that is a grid axis is 'axis'."""
    axes = set(grid_axes(cfg))

    def unless_axis(keys: set[str], value: str | float) -> str | float:
        return "axis" if keys & axes else value

    return {
        "profile": cfg.profile_name,
        "data": cfg.data.name,
        "teacher": unless_axis({"teacher.width", "teacher.depth"}, teacher_name(cfg)),
        "student": unless_axis({"student.width"}, student_name(cfg)),
        "fraction": unless_axis({"data_fraction"}, cfg.data_fraction),
        "split": unless_axis({"split"}, cfg.split),
        "hash": results_hash(cfg),
    }


def table_name(cfg: DictConfig) -> str:
    """E.g. 'quick-phantom-T1w16d4-S1-frac0.5-patient-1a2b3c', or with data_fraction as a
    grid axis 'quick-phantom-T1w16d4-S1-frac-axis-patient-...' (see the module docstring)."""
    s = table_settings(cfg)
    squeeze = str.maketrans("", "", "(),")
    teacher = "T-axis" if s["teacher"] == "axis" else s["teacher"].translate(squeeze)
    student = "S-axis" if s["student"] == "axis" else s["student"].translate(squeeze)
    fraction = "frac-axis" if s["fraction"] == "axis" else f"frac{s['fraction']:g}"
    split = "split-axis" if s["split"] == "axis" else s["split"]
    return "-".join([s["profile"], s["data"], teacher, student, fraction, split, s["hash"]])


def table_dir(cfg: DictConfig) -> Path:
    """The folder of this config's table: ``results_dir/<ablation or grid>/<table_name>``."""
    return Path(cfg.results_dir) / (cfg.ablation_name or "grid") / table_name(cfg)

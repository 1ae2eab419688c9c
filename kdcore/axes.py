"""A grid's axes: config keys (or named bundles of keys) and their values, and the cells
they make beyond variant and seed."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from kdcore.settings import as_dict, leaves, with_settings

# Keys that cannot be grid axes: the grid's own keys, and settings of place and speed.
NOT_AXES = ("variants", "seeds", "axes", "results_dir", "work_dir", "device", "ray.", "tracking.")


def grid_axes(cfg: DictConfig) -> dict[str, list]:
    """The grid's axes as {name: values}. An axis is a config key and its values (spelt
    dotted, ``{student.width: [...]}``, or nested, ``+axes.student.width=[...]``), or a
    named bundle whose values each set several keys: ``{label: ..., key: value, ...}``."""
    return leaves(as_dict(cfg.axes)) if cfg.axes else {}


def axis_cells(cfg: DictConfig) -> list[dict[str, Any]]:
    """The grid's cells beyond variant and seed: one {axis: value} per combination of the
    axes' values, in order (the last axis varies fastest); ``[{}]`` without axes."""
    cells: list[dict[str, Any]] = [{}]
    for key, values in grid_axes(cfg).items():
        cells = [{**cell, key: value} for cell in cells for value in values]
    return cells


def axis_settings(axis: str, value: Any) -> dict[str, Any]:
    """The config keys an axis value sets: itself, or a bundle's keys but its label."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "label"}
    return {axis: value}


def cell_config(cfg: DictConfig, cell: dict[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with the settings of ``cell`` made."""
    settings = {}
    for axis, value in cell.items():
        settings.update(axis_settings(axis, value))
    return with_settings(cfg, settings)


def cell_labels(cell: dict[str, Any]) -> dict[str, Any]:
    """{axis: value} of a cell as the table shows it (a bundle by its label)."""
    return {k: v["label"] if isinstance(v, dict) else v for k, v in cell.items()}


def varied_keys(cfg: DictConfig) -> set[str]:
    """Every config key that some cell of the grid sets."""
    return {
        key
        for axis, values in grid_axes(cfg).items()
        for value in values
        for key in axis_settings(axis, value)
    }


def runs_in(cfg: DictConfig, label: str, cell: dict[str, Any]) -> bool:
    """Whether the variant labelled ``label`` runs in ``cell``: everywhere, unless
    ``only_in`` names it with the axis values ({axis: value or [values]}) of the cells
    it runs in (e.g. the thesis's KD(T1,S2) only with teacher T1 and student width 32)."""
    where = (as_dict(cfg.only_in) if cfg.only_in else {}).get(label)
    if not where:
        return True
    labels = cell_labels(cell)
    return all(
        labels.get(axis) in (wanted if isinstance(wanted, list) else [wanted])
        for axis, wanted in where.items()
    )

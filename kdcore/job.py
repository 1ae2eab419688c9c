"""The whole job, stage by stage: check -> data -> teacher -> grid -> tables.

``bench/run.py`` wraps ``run_job`` in a few lines; scripts and tests call it in-process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from kdcore.axes import axis_cells, cell_config, cell_labels, grid_axes
from kdcore.cost import table_cards
from kdcore.data.prepare import prepare_data
from kdcore.data.splits import example_slices
from kdcore.export import export_table_students
from kdcore.gate import check_config
from kdcore.grid import run_grid, run_tuning
from kdcore.io import replaced_dir, run_lock
from kdcore.losses import parse_variant
from kdcore.names import (
    budget_label,
    dataset_label,
    protocol_label,
    replicates_label,
    table_dir,
    table_settings,
)
from kdcore.per_class import summarize_classes
from kdcore.plots import (
    figures_for,
    plot_classes,
    plot_examples,
    plot_frontier,
    plot_learning_curves,
)
from kdcore.progress import Log, duration
from kdcore.provenance import git_commit, utc_now
from kdcore.report import (
    class_lines,
    cost_lines,
    export_lines,
    frontier,
    render_report,
    time_line,
    with_costs,
)
from kdcore.rows import history_name
from kdcore.runtime import parallel_slots
from kdcore.settings import absolute_paths, as_dict, resolve_device
from kdcore.summary import StatsSettings, in_cell, summarize, summary_markdown
from kdcore.table_folder import (
    STORE_NAME,
    write_cards,
    write_examples,
    write_index,
    write_table,
)
from kdcore.teacher import (
    frozen_teacher,
    load_or_train_teacher,
    prepare_teacher_outputs,
    teacher_dir,
)
from kdcore.tracking import Run, Tracker
from kdcore.training import predict
from kdcore.trial import unpack_masks
from kdcore.trial_store import write_entries
from kdcore.tuning import knob_count


def prepare_teachers(
    cfg: DictConfig, log: Log = print, track: Run | None = None
) -> tuple[dict, list[dict]]:
    """Data for every cell of the grid, and each distinct teacher its cells need, trained
    once (or loaded from its cache) before any trial starts, with its output cache when
    ``kd.teacher_cache`` is on.

    Returns the teachers' weights by folder name (what trials look up) and their metadata
    (with the cells each teacher serves, for the table).
    """
    needs_teacher = any(parse_variant(v).terms for v in cfg.variants)
    weights: dict[str, dict] = {}
    metas: dict[str, dict] = {}
    for cell in axis_cells(cfg):
        cell_cfg = cell_config(cfg, cell)
        data, splits = prepare_data(cell_cfg, log)
        where = "".join(f"{k}={v}, " for k, v in cell_labels(cell).items())
        log(
            f"data: {where}{dataset_label(cell_cfg)}: {len(data)} slices; train "
            f"{len(splits.train)}, student {len(splits.student)}, val {len(splits.val)}, "
            f"test {len(splits.test)}"
        )
        if not needs_teacher:
            continue
        teacher = load_or_train_teacher(cell_cfg, data, splits, log, track)
        key = teacher.folder.name
        if key not in weights:
            weights[key] = teacher.weights()
            metas[key] = {**teacher.meta, "cells": []}
            if cfg.kd.teacher_cache:
                prepare_teacher_outputs(cell_cfg, data, splits, weights[key], log)
        metas[key]["cells"].append(cell_labels(cell))
    return weights, list(metas.values())


def example_masks(cfg: DictConfig, rows: list[dict], teachers: dict[str, dict]) -> dict[str, Any]:
    """What the example figure shows, for the grid's first cell: test slices (one per
    patient, ``example_slices``), their ground truth, and the predictions of the teacher
    and of each variant's first seed."""
    cell = axis_cells(cfg)[0]
    cell_cfg = cell_config(cfg, cell)
    data, splits = prepare_data(cell_cfg, lambda _: None)
    shown = example_slices(data.case, data.masks, splits.test)
    predictions = {}
    if teachers:
        weights = teachers[teacher_dir(cell_cfg, data, splits).name]
        teacher = frozen_teacher(cell_cfg, weights, resolve_device(cfg.device))
        predictions["teacher"] = predict(teacher, data, shown).numpy()
    labels = cell_labels(cell)
    first_seed = min(cfg.seeds)
    for r in rows:
        if r["seed"] == first_seed and all(r[k] == v for k, v in labels.items()):
            predictions[r["variant"]] = unpack_masks(r["examples"])

    def radiological(slices: np.ndarray) -> np.ndarray:
        # slices are (x, y) in RAS: show anterior up and the patient's right on the left
        return np.flip(np.swapaxes(np.asarray(slices), 1, 2), axis=(1, 2))

    images = np.asarray(data.images[shown], dtype=np.float32)
    if images.ndim == 4:  # several modalities: the first is shown
        images = images[:, 0]
    return {
        "images": radiological(images),
        "truth": radiological(data.masks[shown]),
        "predictions": {k: radiological(v) for k, v in predictions.items()},
        "cell": labels,
        "classes": list(data.classes.names) if not data.classes.binary else [],
    }


def tuning_lines(
    cfg: DictConfig, tuned: dict[str, dict] | None, trials: pd.DataFrame | None = None
) -> list[str]:
    """The table's section on equal tuning: the search, and each variant's choice with
    its tuning validation Dice beside the grid's validation and test Dice (``trials``),
    whose gap shows how much of the choice was luck (the winner's curse)."""
    if not tuned:
        return []
    t = cfg.tuning
    axes = list(grid_axes(cfg))
    rows = []
    for key, entry in tuned.items():
        cell, variant = json.loads(key)
        label = parse_variant(variant).label
        settings = ", ".join(f"{k}={v:.3g}" for k, v in (entry["settings"] or {}).items())
        row = {**cell, "variant": label, "knobs": knob_count(variant), "trials": entry["trials"]}
        row["tuning val dice"] = f"{entry['val_dice']:.4f}"
        if trials is not None:
            grid = in_cell(trials, cell, axes)
            grid = grid[grid["variant"] == label]
            row["grid val dice"] = f"{grid['val_dice'].mean():.4f}"
            row["grid test dice"] = f"{grid['dice'].mean():.4f}"
            row["tuning val - grid test (pts)"] = (
                f"{100 * (entry['val_dice'] - grid['dice'].mean()):+.2f}"
            )
        row["chosen settings"] = settings
        rows.append(row)
    return [
        "## Equal tuning",
        "",
        "Every variant of every cell got its configured settings and "
        f"{t.trials_per_knob} random-search samples per knob (so more for a method with more "
        "knobs: `knobs`, `trials` below), each trained on "
        f"seeds {', '.join(map(str, t.seeds))} and scored by its mean validation Dice, over "
        f"its own knobs: the learning rate x [{t.lr_factor[0]:g}, {t.lr_factor[1]:g}], each "
        f"KD term's weight x [{t.weight_factor[0]:g}, {t.weight_factor[1]:g}] and each KD "
        f"method's temperature x [{t.temperature_factor[0]:g}, {t.temperature_factor[1]:g}] "
        "(log-uniform). The rows above ran the chosen settings on every seed; test data "
        "were used once. A tuning validation Dice well above the grid's is the winner's "
        "curse of a search: the chosen sample was partly lucky.",
        "",
        pd.DataFrame(rows).to_markdown(index=False),
        "",
    ]


def write_results(
    cfg: DictConfig,
    rows: list[dict],
    teacher_metas: list[dict],
    command: str,
    commit: str,
    tuned: dict[str, dict] | None,
    timing: tuple[float, int],
    examples: dict[str, Any],
    cards: list[dict[str, Any]] | None = None,
    entries: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[Path], pd.DataFrame]:
    """Write the table folder of a finished grid (built aside, swapped in whole): the
    report with its statistics, figures and tuned settings, trials, per-patient counts,
    histories and provenance. Returns the paths of the report and the trials, and the
    summary. ``timing``: the grid's wall seconds and how many trials ran at once;
    ``examples``: test slices, truth, predictions and the grid cell they come from, for
    the example figure (also kept as ``examples.npz``, so that it can be drawn again);
    ``cards``: the cost card of each network (``kdcore.cost.table_cards``), kept as
    ``cost.json``, shown as a section, as columns and, with several students, as
    ``dice_vs_latency.png``. Rows that carry a student's weights (``export``) have it
    exported into ``students/`` (``kdcore.export``). ``entries``: the trial-store entries
    of the rows by key, kept as ``store.jsonl.gz`` (``bench/store.py`` imports them)."""
    cards = cards or []
    exported = [r for r in rows if "weights" in r]
    for r in rows:
        r.pop("examples")
    axes = list(grid_axes(cfg))
    histories = {history_name(r, axes): r.pop("history") for r in rows}
    cases = pd.DataFrame(
        [
            {**{k: r[k] for k in [*axes, "variant", "seed"]}, **case}
            for r in rows
            for case in r.pop("cases")
        ]
    )
    trials = pd.DataFrame(rows).drop(columns="weights", errors="ignore")
    stats = StatsSettings(**as_dict(cfg.stats))
    summary = with_costs(summarize(trials, cases, axes, stats), trials, axes, cards)
    classes = summarize_classes(trials, cases, axes, stats)
    folder = table_dir(cfg)
    written = utc_now()
    provenance = {
        "ablation": cfg.ablation_name or "grid",
        "settings": table_settings(cfg),
        "axes": grid_axes(cfg),
        "dataset": dataset_label(cfg),
        "trials": len(trials),
        "command": command,
        "commit": commit,
        "written": written,
        "machines": sorted(trials["machine"].dropna().unique()) if "machine" in trials else [],
        "config": as_dict(cfg),
        "tuned": tuned,
    }
    with replaced_dir(folder) as tmp:  # the whole folder, swapped in when complete
        write_examples(tmp, **examples)
        figures = [
            *figures_for(summary, trials, grid_axes(cfg), tmp),
            plot_learning_curves(trials, histories, tmp, axes),
            plot_examples(folder=tmp, **examples),
            *([plot_classes(classes, tmp, axes)] if len(classes) else []),
            *([plot_frontier(summary, cards, teacher_metas, tmp)] if frontier(cards) else []),
        ]
        if cards:
            write_cards(tmp, cards)
        if entries:
            write_entries(tmp / STORE_NAME, entries)
        students = export_table_students(cfg, exported, tmp / "students") if exported else []
        report = render_report(
            f"{cfg.ablation_name or 'grid'}: {folder.name}",
            summary,
            trials,
            cases,
            axes,
            teacher_metas,
            dataset_label(cfg),
            replicates_label(cfg),
            protocol_label(cfg),
            command,
            OmegaConf.to_yaml(cfg, resolve=True),
            commit,
            written,
            as_dict(cfg.reference_table) if cfg.reference_table else None,
            [p.name for p in figures],
            [
                *class_lines(classes, axes),
                *cost_lines(cards),
                time_line(trials, histories, *timing),
                "",
                *export_lines(students),
                *tuning_lines(cfg, tuned, trials),
            ],
            budget=budget_label(cfg),
            stats=stats,
        )
        write_table(tmp, trials, histories, cases, report, provenance, axes)
    return [folder / "table.md", folder / "trials.csv"], summary


def run_job(cfg: DictConfig, command: str | None = None, log: Log = print) -> list[Path]:
    """Run the grid of ``cfg`` and write its table; return the table's files.

    ``command`` is recorded as the table's provenance (default: this call). Bad input
    raises ``ConfigError`` before any work starts; a failed trial raises ``GridError``;
    neither writes anything to ``results_dir``. One run at a time per ``work_dir``
    (``RunLockedError`` otherwise). Every line and number goes through one metric stream
    (``kdcore.tracking``): a run for the job, with the teachers and trials nested in it.
    """
    start = time.perf_counter()
    check_config(cfg)
    run_cfg = absolute_paths(cfg)  # for the trials; the table records cfg as given
    command = command or "kdcore.run_job(cfg)"
    commit = git_commit()
    tracker = Tracker.from_config(as_dict(run_cfg), log)
    name = f"{cfg.ablation_name or 'grid'} {table_dir(cfg).name}"
    with run_lock(run_cfg.work_dir), tracker.run(name, {"command": command, **as_dict(cfg)}) as job:
        teachers, teacher_metas = prepare_teachers(run_cfg, job.line, job)
        cells = axis_cells(cfg)
        where = " (some only in some cells: only_in)" if cfg.only_in else ""
        job.line(
            f"grid: {len(cells)} cells x {len(cfg.variants)} variants{where} x "
            f"{len(cfg.seeds)} seeds with Ray Tune"
        )
        tuned, samples = (
            run_tuning(run_cfg, teachers or None, job.line, job.id) if cfg.tune else (None, {})
        )
        grid_start = time.perf_counter()
        rows, entries = run_grid(run_cfg, teachers or None, job.line, tuned, job.id)
        entries = {**samples, **entries}  # the table folder keeps its tuning samples too
        timing = (time.perf_counter() - grid_start, parallel_slots(cfg))
        examples = example_masks(run_cfg, rows, teachers)
        cards = table_cards(run_cfg, job.line) if cfg.cost.enabled else []
        paths, summary = write_results(
            cfg, rows, teacher_metas, command, commit, tuned, timing, examples, cards, entries
        )
        axes = list(grid_axes(cfg))
        index = write_index(Path(cfg.results_dir))
        _track_table(job, summary, axes, paths[0].parent)
        job.line("\n" + summary_markdown(summary, axes))
        job.line(
            f"done in {duration(time.perf_counter() - start)}: table {paths[0]} "
            f"(every table: {index})"
        )
    return paths


def _track_table(job: Run, summary: pd.DataFrame, axes: list[str], folder: Path) -> None:
    """The finished table in the job's run: its folder as an artifact, and each row's
    mean test Dice (and paired difference from its baseline) as numbers."""
    job.log_artifact(folder, folder="table")
    numbers = {}
    for _, row in summary.iterrows():
        name = "/".join([*(f"{k}={row[k]}" for k in axes), str(row["variant"])])
        numbers[f"dice/{name}"] = float(row["dice_mean"])
        if "delta" in row and pd.notna(row["delta"]):
            numbers[f"delta/{name}"] = float(row["delta"])
    job.log_metrics(numbers, step=0)

"""The whole job, stage by stage: check -> data -> teacher -> grid -> tables.

``bench/run.py`` wraps ``run_job`` in a few lines; scripts and tests call it in-process.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from kdcore.config import as_dict, check_config
from kdcore.data.prepare import prepare_data
from kdcore.grid import run_grid
from kdcore.losses import parse_variant
from kdcore.names import dataset_label, table_dir, table_settings
from kdcore.progress import Log, duration
from kdcore.report import (
    git_commit,
    render_report,
    summarize,
    summary_markdown,
    utc_now,
    write_index,
    write_table,
)
from kdcore.teacher import load_or_train_teacher, prepare_teacher_outputs


def run_job(cfg: DictConfig, command: str | None = None, log: Log = print) -> list[Path]:
    """Run the grid of ``cfg`` and write its table; return the table's files.

    ``command`` is recorded as the table's provenance (default: this call). Bad input
    raises ``ConfigError`` before any work starts; a failed trial raises ``GridError``;
    neither writes anything to ``results_dir``.
    """
    start = time.perf_counter()
    check_config(cfg)
    command = command or "kdcore.run_job(cfg)"
    commit = git_commit()
    data, splits = prepare_data(cfg, log)
    log(
        f"data: {dataset_label(cfg)}: {len(data)} slices; train {len(splits.train)}, "
        f"student {len(splits.student)}, val {len(splits.val)}, test {len(splits.test)}"
    )
    teacher = weights = None
    if any(parse_variant(v).terms for v in cfg.variants):
        teacher = load_or_train_teacher(cfg, data, splits, log)
        weights = teacher.weights()
        if cfg.kd.teacher_cache:
            prepare_teacher_outputs(cfg, data, splits, weights, log)
    log(f"grid: {len(cfg.variants)} variants x {len(cfg.seeds)} seeds with Ray Tune")
    rows = run_grid(cfg, weights, log)
    histories = {(r["variant"], r["seed"]): r.pop("history") for r in rows}
    trials = pd.DataFrame(rows)
    folder = table_dir(cfg)
    written = utc_now()
    report = render_report(
        f"{cfg.ablation_name or 'grid'}: {folder.name}",
        trials,
        teacher.meta if teacher else None,
        dataset_label(cfg),
        command,
        OmegaConf.to_yaml(cfg, resolve=True),
        commit,
        written,
    )
    provenance = {
        "ablation": cfg.ablation_name or "grid",
        "settings": table_settings(cfg),
        "dataset": dataset_label(cfg),
        "trials": len(trials),
        "command": command,
        "commit": commit,
        "written": written,
        "config": as_dict(cfg),
    }
    paths = write_table(folder, trials, histories, report, provenance)
    index = write_index(Path(cfg.results_dir))
    log("\n" + summary_markdown(summarize(trials)))
    log(f"done in {duration(time.perf_counter() - start)}: table {paths[0]} (every table: {index})")
    return paths

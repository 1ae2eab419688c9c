"""Run a grid of distillation trials and write its comparison tables.

    python bench/run.py ablation=scales                   # quick profile, phantom CT
    python bench/run.py ablation=scales profile=smoke     # the whole grid in ~2 minutes
    python bench/run.py ablation=scales data=msd_spleen data.root=/data/msd profile=paper
    RAY_ADDRESS=auto python bench/run.py ablation=scales  # on an existing Ray cluster

Steps: check the config, prepare the data (generated or loaded, cached), train or reuse
the teacher, run one Ray Tune trial per (variant, seed), write results_dir/<name>.{csv,md}.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

# Run from a source checkout without installing, e.g. `ray job submit --working-dir .`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from kdcore.errors import ConfigError
from kdcore.experiment import (
    check_config,
    dataset_label,
    load_or_train_teacher,
    load_teacher_weights,
    prepare_data,
    prepare_teacher_outputs,
)
from kdcore.grid import GridError, run_grid
from kdcore.losses import parse_variant
from kdcore.report import git_commit, render_report, summarize, summary_markdown, write_tables


def log(message: str) -> None:
    print(f"[kdbench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cfg: DictConfig) -> list[Path]:
    """The whole job; returns the written result files."""
    start = time.perf_counter()
    check_config(cfg)
    stem = f"ablation_{cfg.ablation_name}" if cfg.ablation_name else "grid"
    command = shlex.join(["python", "bench/run.py", *sys.argv[1:]])
    commit = git_commit()
    data, splits = prepare_data(cfg, log)
    log(
        f"data: {dataset_label(cfg)}: {len(data)} slices; train {len(splits.train)}, "
        f"student {len(splits.student)}, val {len(splits.val)}, test {len(splits.test)}"
    )
    needs_teacher = any(parse_variant(v).terms for v in cfg.variants)
    teacher = load_or_train_teacher(cfg, data, splits, log) if needs_teacher else None
    weights = load_teacher_weights(teacher.path) if teacher else None
    if teacher and cfg.kd.teacher_cache:
        prepare_teacher_outputs(cfg, data, splits, weights, log)
    log(f"grid: {len(cfg.variants)} variants x {len(cfg.seeds)} seeds with Ray Tune")
    rows = run_grid(cfg, weights, log)
    trials = pd.DataFrame(rows)
    report = render_report(
        stem,
        trials,
        teacher.meta if teacher else None,
        dataset_label(cfg),
        command,
        OmegaConf.to_yaml(cfg, resolve=True),
        commit,
    )
    paths = write_tables(Path(cfg.results_dir), stem, trials, report)
    print(summary_markdown(summarize(trials)))
    log(f"wrote {', '.join(map(str, paths))} in {time.perf_counter() - start:.0f}s")
    return paths


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (ConfigError, GridError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

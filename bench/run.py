"""Run a grid of distillation trials and write its comparison table.

    python bench/run.py ablation=scales                   # quick profile, phantom CT
    python bench/run.py ablation=scales profile=smoke     # the whole grid in ~2 minutes
    python bench/run.py ablation=scales data=msd_spleen data.root=/data/msd profile=paper
    RAY_ADDRESS=auto python bench/run.py ablation=scales  # on an existing Ray cluster

Steps (``kdcore.run_job``): check the config, prepare the data (generated or loaded,
cached), train or reuse the teacher, run one Ray Tune trial per (variant, seed), write
the table under results_dir/<ablation>/<settings>/ and the index results_dir/index.md.
Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

# Run from a source checkout without installing, e.g. `ray job submit --working-dir .`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra
from omegaconf import DictConfig

from kdcore.errors import KDBenchError

BAD_INPUT = 2
started = False  # set once Hydra has composed the config and the job begins


def log(message: str) -> None:
    print(f"[kdbench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    global started
    started = True
    from kdcore import run_job

    try:
        run_job(cfg, shlex.join(["python", "bench/run.py", *sys.argv[1:]]), log)
    except KDBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(BAD_INPUT)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as stop:
        # Hydra exits with 1 when an override is bad (unknown key, group option or
        # syntax), before the job starts: that is bad input too.
        if stop.code == 1 and not started:
            sys.exit(BAD_INPUT)
        raise

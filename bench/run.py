"""Run a grid of distillation trials and write its comparison table.

    python bench/run.py ablation=scales                   # quick profile, phantom CT
    python bench/run.py ablation=scales profile=smoke     # the whole grid in ~2 minutes
    python bench/run.py ablation=scales data=msd_spleen data.root=/data/msd profile=paper
    RAY_ADDRESS=auto python bench/run.py ablation=scales  # on an existing Ray cluster

Steps (``kdcore.run_job``): check the config, prepare the data (generated or loaded,
cached), train or reuse the teacher, run one Ray Tune trial per (variant, seed), write
the table under results_dir/<ablation>/<settings>/ and the index results_dir/index.md.

Every failure ends with one line on stderr, without a traceback: bad input with exit
status 2; a full, over-quota, read-only or forbidden disk with 74 (EX_IOERR), naming the
path; SIGINT (Ctrl-C) or SIGTERM with "interrupted: run the same command again to
resume" and 130 or 143. Tables are built aside and swapped in whole, so an interrupted
run leaves the previous table as it was, and the next run resumes the grid.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

# Run from a source checkout without installing, e.g. `ray job submit --working-dir .`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra
from omegaconf import DictConfig

from kdcore.errors import BAD_INPUT, DISK_ERROR, KDBenchError, storage_message

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED = "interrupted: run the same command again to resume"
started = False  # set once Hydra has composed the config and the job begins
stop_signal: int | None = None  # the first SIGINT / SIGTERM received


def log(message: str) -> None:
    print(f"[kdbench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def on_stop(signum: int, _frame) -> None:
    """SIGINT / SIGTERM: remember which, and stop the job with a KeyboardInterrupt (which
    Ray passes through its blocking calls). A second signal during the clean-up exits at
    once."""
    global stop_signal
    if stop_signal is not None:
        print(f"{INTERRUPTED} (stopped at once)", file=sys.stderr, flush=True)
        os._exit(128 + stop_signal)
    stop_signal = signum
    raise KeyboardInterrupt


def hold_stop_signals() -> None:
    """Install ``on_stop`` for SIGINT and SIGTERM, and keep it installed.

    ``ray.init`` replaces the SIGTERM handler with one that exits without a word (status
    1, or an abort from Ray's core), and Ray Tune its SIGINT handler with one that stops
    the grid gracefully: in this process, later handlers for these two signals are
    ignored (and Tune is told not to set its own). Ray's core is also told not to print
    a stack dump of its own on SIGTERM (a local Ray's workers inherit that setting).
    """
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    set_handler = signal.signal
    for signum in STOP_SIGNALS:
        set_handler(signum, on_stop)

    def keep_ours(signum, handler):
        if signum in STOP_SIGNALS and threading.current_thread() is threading.main_thread():
            return on_stop
        return set_handler(signum, handler)

    signal.signal = keep_ours


def fail(message: str, status: int) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.exit(status)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    global started
    started = True
    from kdcore import run_job

    try:
        run_job(cfg, shlex.join(["python", "bench/run.py", *sys.argv[1:]]), log)
    except BaseException as err:
        if stop_signal is not None:  # whatever the interrupt became on its way up
            fail(INTERRUPTED, 128 + stop_signal)
        if isinstance(err, KDBenchError):
            fail(f"error: {err}", BAD_INPUT)
        if isinstance(err, OSError) and (message := storage_message(err)):
            fail(f"error: {message}", DISK_ERROR)
        raise


if __name__ == "__main__":
    hold_stop_signals()
    try:
        main()
    except KeyboardInterrupt:  # while Hydra composes the config
        fail(INTERRUPTED, 128 + (stop_signal or signal.SIGINT))
    except SystemExit as stop:
        # Hydra exits with 1 when an override is bad (unknown key, group option or
        # syntax), before the job starts: that is bad input too.
        if stop.code == 1 and not started:
            sys.exit(BAD_INPUT)
        raise

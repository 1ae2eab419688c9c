"""A grid of student trials (variant x seed) run with Ray Tune.

A fresh local Ray by default; an existing cluster when ``ray.address`` (or RAY_ADDRESS)
names one. Each trial checkpoints every few epochs, and a grid interrupted for any
reason resumes where it stopped when the same command runs again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# A checkpoint every few epochs of short trials is intended, not a bottleneck to warn of.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Metrics leave by one door (kdcore.tracking), not also by Tune's CSV, JSON and TensorBoard
# files in every trial folder.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

import ray  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from ray import tune  # noqa: E402

from kdcore.axes import axis_cells, cell_config, cell_labels, runs_in  # noqa: E402
from kdcore.data.sources import data_source  # noqa: E402
from kdcore.errors import GridError, NonFiniteLossError  # noqa: E402
from kdcore.losses import parse_variant  # noqa: E402
from kdcore.progress import Log, Progress  # noqa:E402
from kdcore.provenance import git_commit, utc_now  # noqa: E402
from kdcore.rows import METRICS, TRIAL_COLUMNS, cell_text  # noqa: E402
from kdcore.runtime import connect, parallel_slots, sharded_trials, storage_root  # noqa: E402
from kdcore.settings import as_dict, stable_hash, with_settings  # noqa: E402
from kdcore.tracking import Tracker, legal_name  # noqa: E402
from kdcore.trial import ending, exports_weights, run_trial, run_trial_on_workers  # noqa: E402
from kdcore.trial_store import TrialStore, sample_key, trial_key  # noqa: E402
from kdcore.tuning import cell_key, choose, draw_samples, knob_settings, sample_count  # noqa: E402


class _NoTrialFiles(logging.Filter):
    """Drops Tune's warning, once per trial at the end of a grid, that a trial folder has
    no result.json or progress.csv: those files are off on purpose (above), and every
    result comes from the trials' reports."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to fetch metrics")


logging.getLogger("ray.tune.analysis.experiment_analysis").addFilter(_NoTrialFiles())


class ProgressLog(tune.Callback):
    """One line per trial start and end with done/total and the time left, instead of
    Ray's per-trial tables."""

    def __init__(self, total: int, log: Log, store: str | None = None):
        self.total, self.log, self.store = total, log, store  # store: the trial store's root
        self.progress: Progress | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the run; the log (the job's run of the metric
        # stream, with open event files) stays behind, and ``_fit`` hands a restored
        # callback the log of the process that resumes the grid
        return {**self.__dict__, "log": print}

    @staticmethod
    def _name(trial) -> str:
        spec = _spec(trial.config)
        cell = "".join(f"{k}={v}, " for k, v in cell_labels(spec["cell"]).items())
        return f"{cell}{spec['variant']} seed {spec['seed']}"

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.progress is None:  # trials finished before a resume do not set the pace
            finished = sum(t.status == "TERMINATED" for t in trials)
            self.progress = Progress(self.total, finished)
        self.log(f"trial started: {self._name(trial)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result
        status = self.progress.advance() if self.progress else f"{self.total} trials"
        if r.get("failure"):
            self.log(f"trial {status} FAILED: {r['failure']}")
            return
        sample = "dice" not in r  # a tuning sample: judged on validation only
        if self.store and r.get("finished"):  # kept at once: an interrupted grid loses nothing
            row = sample_row(r) if sample else stored_row(r)
            TrialStore(self.store).put(_spec(trial.config)["key"], row)
        if sample:
            self.log(f"trial {status}: {self._name(trial)}: val dice {r['val_dice']:.4f}")
            return
        self.log(
            f"trial {status}: {self._name(trial)}: test dice "
            f"{r.get('dice', float('nan')):.4f} (val {r.get('val_dice', float('nan')):.4f}, "
            f"{r.get('wall_s', 0):.0f}s)"
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        if self.progress is not None:
            self.progress.advance()
        self.log(f"trial FAILED: {self._name(trial)} (logs in {trial.local_path})")


def _trainable(
    config: dict[str, Any],
    cfg: dict,
    teachers: dict | None,
    tuned: dict | None,
    parent: str | None,
) -> None:
    """One Ray Tune trial: train a student in its grid cell, report per-epoch progress,
    then its row (with the cell's axis values).

    The trial's settings are its cell's, then, with ``tune=true``, either the factors of
    a tuning sample (``config["knobs"]``: only validation Dice is reported) or the tuned
    settings of its (cell, variant) (``tuned``). The trial is a run of the metric stream
    (``kdcore.tracking``) nested under the job's run ``parent``: its settings, every
    epoch's numbers, its test metrics; its lines (each epoch's losses per term and
    validation Dice) go to ``trial.log`` in the trial's folder. A non-finite loss ends the
    trial with its message as the result, so the grid reports it without a traceback.
    """
    config = _spec(config)
    base = OmegaConf.create(cfg)
    cfg = cell_config(base, config["cell"])
    sample = "knobs" in config
    settings = (
        knob_settings(cfg, config["variant"], config["knobs"])
        if sample
        else (tuned or {}).get(cell_key(config["cell"], config["variant"]), {}).get("settings")
    )
    cfg = with_settings(cfg, settings or {})
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one line per checkpoint
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_trial)))
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(Path(folder) / "state.pt", weights_only=True)
    every = cfg.ray.checkpoint_every
    # Tune runs the trial in its own folder on whichever node it was placed (the driver's
    # trial folder exists only on the driver's node); artifacts sync the log to storage
    trial_log = Path.cwd() / "trial.log"

    def log(line: str) -> None:
        with open(trial_log, "a") as f:
            print(line, file=f)

    kind = "tuning sample" if sample else "trial"
    name = (
        f"{kind} {cell_text(cell_labels(config['cell']))} {config['variant']} seed {config['seed']}"
    )
    params = {"variant": config["variant"], "seed": config["seed"], **(settings or {})}
    params.update({f"axis.{k}": v for k, v in cell_labels(config["cell"]).items()})
    track = Tracker.from_config(as_dict(cfg), log).run(
        name, params, parent=parent, folder=Path.cwd() / "metrics"
    )
    checkpoint_s = 0.0

    def on_epoch(state, ckpt: dict) -> None:
        nonlocal checkpoint_s
        h = state.history[-1]
        track.log_epochs([h])
        metrics = {legal_name(k): v for k, v in h.items() if k != "epoch_s"}  # Tune's own
        if every and state.evals % every == 0:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                torch.save(ckpt, Path(folder) / "state.pt")
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            checkpoint_s += time.perf_counter() - start
        else:
            tune.report(metrics)

    try:
        if sharded_trials(cfg):  # the trial's own workers: no per-epoch reports or resume
            row = run_trial_on_workers(cfg, config["variant"], config["seed"], teachers)
            track.log_epochs(row["history"])
            if sample:
                row = {"val_dice": row["val_dice"]}
        else:
            row = run_trial(
                cfg,
                config["variant"],
                config["seed"],
                teachers,
                on_epoch,
                resume,
                track.line,
                not sample,
            )
    except NonFiniteLossError as err:
        track.line(str(err))
        track.end("FAILED")
        if sample:  # a tuning sample that diverged is a bad sample, not a failed grid
            tune.report({"val_dice": -1.0, "settings": json.dumps(settings), "finished": True})
        else:
            tune.report({"failure": str(err), "finished": False})
        return
    except BaseException:
        track.end("FAILED")
        raise
    numbers = {k: row[k] for k in (*METRICS, "val_dice", "best_epoch") if k in row}
    track.log_metrics({f"final_{k}": v for k, v in numbers.items()}, step=row["steps"])
    track.end()
    if sample:
        row = {"val_dice": row["val_dice"], "settings": json.dumps(settings)}
        tune.report({**row, "finished": True})
        return
    # nested results travel as JSON: Tune flattens dicts and keeps lists as they are
    extra = {k: json.dumps(row.pop(k)) for k in ("history", "cases")}
    node = ray.get_runtime_context().get_node_id()[:8]
    tune.report(
        {
            **row,
            **extra,
            "checkpoint_s": checkpoint_s,
            "node": node,
            "finished": True,
        }
    )


def _last_line(error: BaseException) -> str:
    """The last line of a trial's error (Ray's text holds the worker's traceback)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _fit(
    cfg: DictConfig,
    name: str,
    param_space: dict[str, Any],
    total: int,
    num_samples: int,
    teachers: dict | None,
    tuned: dict | None,
    log: Log,
    parent: str | None,
    store: str | None = None,
) -> list:
    """Run (or resume) the Ray Tune run ``name`` of ``_trainable`` trials and return its
    results, once every trial has finished; else raise GridError saying why. With
    ``store`` (the trial store's root) each finished trial is stored as it completes."""
    storage = storage_root(cfg)
    resources = {"cpu": cfg.ray.cpus_per_trial, "gpu": cfg.ray.gpus_per_trial}
    if sharded_trials(cfg):  # a trial only waits for its Ray Train workers
        resources = {"cpu": 0, "gpu": 0, "memory": 1}  # (Tune refuses an empty request)
    # The config and the teachers' weights go through Ray's object store: trials on other
    # nodes need no shared disk, and a trial's own config is its cell, variant and seed.
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable, cfg=as_dict(cfg), teachers=teachers, tuned=tuned, parent=parent
        ),
        resources,
    )
    connect(cfg, log)
    path = f"{storage}/{name}"
    if tune.Tuner.can_restore(path):
        log(f"ray: resuming {path}")
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, restart_errored=True)
        local = getattr(tuner, "_local_tuner", None)  # (None through a Ray client)
        for callback in (local.get_run_config().callbacks or []) if local else []:
            if isinstance(callback, ProgressLog):
                callback.log = log
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                num_samples=num_samples,
                # trials that start their own workers take no resources from Tune
                max_concurrent_trials=(
                    parallel_slots(cfg)
                    if sharded_trials(cfg)
                    else cfg.ray.max_concurrent_trials or None
                ),
                reuse_actors=True,  # skip a new worker process (and torch import) per trial
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                verbose=cfg.ray.verbose,
                # restored with the run, so a resumed grid logs its progress too
                callbacks=[ProgressLog(total, log, store)],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                sync_config=tune.SyncConfig(sync_artifacts=True),  # trial.log of every node
            ),
        )
    results = tuner.fit()
    failures = [r.metrics["failure"] for r in results if (r.metrics or {}).get("failure")]
    if failures:
        raise GridError(
            f"{len(failures)} of {len(results)} trials failed; no table was written. "
            + " ".join(failures)
        )
    errors = [r.error for r in results if r.error is not None]
    unfinished = [r for r in results if not (r.metrics or {}).get("finished")]
    if unfinished:
        cause = f"first error: {_last_line(errors[0])}" if errors else "interrupted"
        raise GridError(
            f"{len(unfinished)} of {len(results)} trials did not finish ({cause}); logs under "
            f"{path}. No table was written. Run the same command again to resume the grid."
        )
    return list(results)


def _train_missing(
    cfg: DictConfig,
    name: str,
    todo: list[dict[str, Any]],
    entries: dict[str, dict[str, Any] | None],
    row_of: Callable[[dict[str, Any]], dict[str, Any]],
    teachers: dict | None,
    tuned: dict | None,
    log: Log,
    parent: str | None,
) -> None:
    """Train the trials (or tuning samples) ``todo`` in the Ray run ``name`` and set each
    one's trial-store entry in ``entries``; ``row_of``: what the store keeps of a finished
    one's metrics (``stored_row`` or ``sample_row``)."""
    root = storage_root(cfg)
    store = TrialStore(root)
    space = {"trial": tune.grid_search(todo)}
    results = _fit(cfg, name, space, len(todo), 1, teachers, tuned, log, parent, root)
    for r in results:  # (each was stored as it finished; this covers a missed one)
        key = r.config["trial"]["key"]
        entries[key] = store.get(key)
        if entries[key] is None:
            entries[key] = row_of(r.metrics)
            store.put(key, entries[key])


def _run_name(cfg: DictConfig, kind: str, extra: Any = None) -> str:
    """A Ray run's folder name: a hash of the config (and ``extra``), so that the same
    command resumes its own run. Each cell's data key is part of it (a phantom's resolved
    appearance): a preset changed in code makes a new run, not a resumed one of stale data."""
    key = {k: v for k, v in as_dict(cfg).items() if k not in ("ray", "results_dir", "tracking")}
    cells = [cell_config(cfg, cell) for cell in axis_cells(cfg)]
    key["data"] = [data_source(c).key(c) for c in cells]
    return f"{cfg.ablation_name or 'grid'}{kind}-{stable_hash([key, extra])}"


def run_tuning(
    cfg: DictConfig,
    teachers: dict[str, dict[str, torch.Tensor]] | None,
    log: Log = print,
    parent: str | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Equal tuning (``kdcore.tuning``): the samples of every (cell, variant), each on
    every seed of ``tuning.seeds``, judged on validation Dice. Returns the best settings of
    each (``tuning.choose``) and the trial-store entries of the samples by key: like grid
    trials, samples are kept in the trial store (``sample_key``), so a later grid with
    other variants, or a resumed one, trains only the samples it lacks. ``parent``: the
    id of the job's run, under which each sample is a run of the metric stream."""
    root = storage_root(cfg)
    store = TrialStore(root)
    seeds = list(cfg.tuning.seeds)
    samples = []
    # not struct: a tuned term's weight (kd.weights.at@enc) is a new key
    base = OmegaConf.create(as_dict(cfg))
    for cell in axis_cells(cfg):
        cell_cfg = cell_config(base, cell)
        for variant in cfg.variants:
            if not runs_in(cfg, parse_variant(variant).label, cell):
                continue
            for i, knobs in enumerate(draw_samples(cfg, cell, variant)):
                trial_cfg = with_settings(cell_cfg, knob_settings(cell_cfg, variant, knobs))
                for seed in seeds:
                    key = sample_key(trial_cfg, variant, seed)
                    samples.append(
                        {
                            "cell": cell,
                            "variant": variant,
                            "sample": i,
                            "knobs": knobs,
                            "seed": seed,
                            "key": key,
                        }
                    )
    entries = {s["key"]: store.get(s["key"]) for s in samples}
    todo = list({s["key"]: s for s in samples if entries[s["key"]] is None}.values())
    counts = {parse_variant(v).label: sample_count(cfg, v) for v in cfg.variants}
    log(
        f"tuning: {len(samples) // len(seeds)} samples x {len(seeds)} seeds (samples per "
        + "variant: "
        + ", ".join(f"{k} {n}" for k, n in counts.items())
        + f"): {len(samples) - len(todo)} reused from the trial store, {len(todo)} to train"
    )
    if todo:
        name = _run_name(cfg, "-tuning", [s["key"] for s in todo])
        _train_missing(cfg, name, todo, entries, sample_row, teachers, None, log, parent)
    chosen = choose(
        [
            {
                "cell": s["cell"],
                "variant": s["variant"],
                "sample": s["sample"],
                "val_dice": entries[s["key"]]["val_dice"],
                "settings": entries[s["key"]]["settings"],
            }
            for s in samples
        ]
    )
    return chosen, entries


def sample_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the trial store keeps of a finished tuning sample: its validation Dice (-1
    if its loss diverged) and settings, and when and where it was made."""
    return {
        "kind": "tuning sample",
        "val_dice": metrics["val_dice"],
        "settings": json.loads(metrics["settings"]),
        "trained": utc_now(),
        "commit": git_commit(),
    }


def _spec(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's own settings, flat: Tune's config holds the cell and variant (and a grid
    trial's seed and store key, a tuning sample's index and knobs) under ``trial``, and a
    tuning sample's seed beside it."""
    return {**config.get("trial", {}), **{k: v for k, v in config.items() if k != "trial"}}


def stored_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the trial store keeps of a finished trial's reported metrics: its columns,
    history, per-patient counts and example masks, and when and where it was made."""
    row = {k: metrics[k] for k in TRIAL_COLUMNS if k in metrics}
    row["trial_s"] = metrics.get("time_total_s", metrics.get("trial_s"))
    row.update({k: json.loads(metrics[k]) for k in ("history", "cases")})
    row["examples"] = metrics["examples"]
    if "weights" in metrics:
        row["weights"] = metrics["weights"]
    row["trained"] = utc_now()
    row["commit"] = git_commit()
    return row


def grid_trials(cfg: DictConfig, tuned: dict | None = None) -> list[dict[str, Any]]:
    """Every trial of the grid, in grid order: its cell, variant, seed and store key."""
    trials = []
    # not struct: a tuned term's weight (kd.weights.at@enc) is a new key
    base = OmegaConf.create(as_dict(cfg))
    for cell in axis_cells(cfg):
        for variant in cfg.variants:
            if not runs_in(cfg, parse_variant(variant).label, cell):
                continue
            settings = (tuned or {}).get(cell_key(cell, variant), {}).get("settings")
            trial_cfg = with_settings(cell_config(base, cell), settings or {})
            for seed in cfg.seeds:
                key = trial_key(trial_cfg, variant, seed)
                trials.append({"cell": cell, "variant": variant, "seed": seed, "key": key})
    return trials


def run_grid(
    cfg: DictConfig,
    teachers: dict[str, dict[str, torch.Tensor]] | None,
    log: Log = print,
    tuned: dict[str, dict[str, Any]] | None = None,
    parent: str | None = None,
) -> tuple[list[dict], dict[str, dict[str, Any]]]:
    """Run one trial per (cell, variant, seed) and return their rows, in grid order, and
    the trial-store entries behind them by key (what a table folder keeps).

    A cell is one combination of the ``axes`` values (``axis_cells``); each row holds its
    cell's values as columns, the trial's per-validation ``history`` and its per-patient
    test counts ``cases`` (lists of dicts), its trial-store ``key``, and ``reused``:
    whether the trial came from the trial store (``kdcore.trial_store``: finished by an
    earlier grid, of this table or another) instead of being trained by this one. Only
    trials missing from the store run, each distinct one once. ``teachers``: weights by
    teacher folder name; ``tuned``: the settings of each (cell, variant) from
    ``run_tuning``; ``parent``: the id of the job's run, under which each trial is
    a run of the metric stream.

    The Ray run under ``work_dir/ray`` is named by a hash of the config, so running the
    same command again resumes unfinished and failed trials.
    """
    root = storage_root(cfg)
    store = TrialStore(root)
    wanted = grid_trials(cfg, tuned)
    entries = {t["key"]: store.get(t["key"]) for t in wanted}  # each entry read once
    # with export on, a first-seed trial stored without its student's weights runs again
    need_weights = {t["key"] for t in wanted if exports_weights(cfg, t["seed"])}
    found = {
        key
        for key, entry in entries.items()
        if entry is not None and (key not in need_weights or "weights" in entry)
    }
    todo = list({t["key"]: t for t in wanted if t["key"] not in found}.values())
    log(
        f"grid: {len(wanted)} trials: {sum(t['key'] in found for t in wanted)} reused from "
        f"the trial store ({root}/trials), {len(todo)} to train"
    )
    if todo:
        name = _run_name(cfg, "", [tuned, [t["key"] for t in wanted]])
        _train_missing(cfg, name, todo, entries, stored_row, teachers, tuned, log, parent)
    rows = []
    for t in wanted:
        entry = entries[t["key"]]
        # an axis value wins over a trial column of the same name (a teacher axis labels
        # its teachers 'T1', 'T2'; the trial's own column would say 'T1(w16,d4)')
        row = cell_labels(t["cell"])
        row.update({k: v for k, v in entry.items() if k not in row})
        row["variant"] = parse_variant(t["variant"]).label  # this grid's name for it
        row["reused"] = t["key"] in found
        row["key"] = t["key"]  # (not a trials.csv column: names its store entry)
        row.update(ending(cfg, row["history"], row["best_step"], row["stopped_early"]))
        rows.append(row)
    return rows, entries

"""One way out for every number: a ``Tracker`` hands what a run measures to its sinks.

What is measured (``Run.log_metrics``, ``log_params``, ``log_artifact``, ``line``) is
apart from where it goes, the way Ray Tune's callbacks and MONAI's handlers split them:

- ``ConsoleSink``: the lines, through the stage's log function, as users see them;
- ``TensorBoardSink``: scalar event files in each run's folder (tensorboardX);
- ``MlflowSink``: one MLflow run per ``Run``, children nested under their parent (tag
  ``mlflow.parentRunId``), with params, metric histories per step, artifacts and the
  run's lines as ``log.txt``. Needs ``pip install -e '.[mlflow]'``.

Runs nest: a job run, a child per teacher or trial. A child can start in another process
(a Ray worker) from its parent's ``Run.id`` alone, with a tracker built there from the
same config::

    tracker = Tracker.from_config(cfg, log)
    with tracker.run("trial-baseline-seed0", params, parent=job_id, folder=trial_dir) as run:
        run.log_metrics({"val_dice": 0.8}, step=1)

Metric and param names are made legal for both TensorBoard and MLflow by ``legal_name``
(``loss_mse@enc`` -> ``loss_mse_at_enc``). The config's ``tracking`` section is
described by ``SETTINGS``, which the config gate turns into its rules.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kdcore.errors import ConfigError
from kdcore.progress import Log

MLFLOW_INSTALL = "pip install -e '.[mlflow]'"
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's SQLAlchemy stores


def installed(package: str) -> bool:
    """Whether ``package`` can be imported (``mlflow`` is there with mlflow-skinny too)."""
    return importlib.util.find_spec(package) is not None


def _uri_ok(value: Any) -> bool:
    # Workers run in folders of their own: a relative path would mean another store there.
    return value is None or (isinstance(value, str) and ("://" in value or os.path.isabs(value)))


# The config's ``tracking`` keys: {key: (what a good value is, test)}; config gate rules.
SETTINGS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "tensorboard": ("true or false", lambda v: isinstance(v, bool)),
    "mlflow": (
        f"false, or true with MLflow installed ({MLFLOW_INSTALL})",
        lambda v: v is False or (v is True and installed("mlflow")),
    ),
    "uri": (
        "null (a file store under work_dir/mlruns), a server's address "
        "(http://host:5000), or an absolute path or URI (file:///..., sqlite:///...)",
        _uri_ok,
    ),
    "experiment": ("a non-empty string", lambda v: isinstance(v, str) and bool(v)),
}


def legal_name(name: str) -> str:
    """A metric or param name legal for TensorBoard and MLflow: ``@`` -> ``_at_``, any
    other character but letters, digits, ``_ . / -`` -> ``_``, no empty or dot path parts
    (``loss_mse@enc`` -> ``loss_mse_at_enc``)."""
    clean = re.sub(r"[^\w./-]", "_", name.replace("@", "_at_"))
    clean = "/".join(part for part in clean.split("/") if part not in ("", ".", ".."))
    if not clean:
        raise ValueError(f"{name!r} cannot be a metric or param name: it has no letters")
    return clean


def _legal_keys(values: Mapping[str, Any], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in values.items():
        name = legal_name(key)
        if name in out:
            raise ValueError(f"{what} {origin[name]!r} and {key!r} both become {name!r}")
        out[name], origin[name] = value, key
    return out


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params (a config) as {dotted key: text}: strings as they are, other values
    as JSON (``None`` -> ``null``, lists -> ``[0, 1]``)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, f"{dotted}."))
        elif isinstance(value, str):
            out[dotted] = value
        else:
            plain = list(value) if isinstance(value, Sequence) else value
            out[dotted] = json.dumps(plain, default=str)
    return out


class RunInfo:
    """What every sink knows of a run: its name, id, parent's id and folder."""

    def __init__(self, name: str, run_id: str, parent_id: str | None, folder: Path):
        self.name, self.id, self.parent_id, self.folder = name, run_id, parent_id, folder


class Sink:
    """Where measurements go. Every method does nothing unless a sink overrides it.

    A sink with ``names_runs = True`` (MLflow) gives each run its id from ``start``;
    a tracker has at most one such sink, others get ``info.id`` already set.
    """

    names_runs = False

    def start(self, info: RunInfo) -> str | None:
        """A run begins (``info.id`` is None for the sink that names runs)."""
        return None

    def params(self, info: RunInfo, params: dict[str, str]) -> None:
        """The run's settings, {legal name: text}."""

    def metrics(self, info: RunInfo, metrics: dict[str, float], step: int) -> None:
        """Measurements at ``step`` (an optimiser step), {legal name: value}."""

    def artifact(self, info: RunInfo, path: Path, folder: str | None) -> None:
        """A file or folder the run produced."""

    def line(self, info: RunInfo, text: str) -> None:
        """A line for whoever watches the run."""

    def end(self, info: RunInfo, status: str) -> None:
        """The run ends: FINISHED, FAILED or KILLED."""


class ConsoleSink(Sink):
    """Lines through the log function (``print`` or the stage's own), unchanged."""

    def __init__(self, log: Log = print):
        self.log = log

    def line(self, info: RunInfo, text: str) -> None:
        self.log(text)


class TensorBoardSink(Sink):
    """Scalars as TensorBoard event files in each run's folder (children in subfolders);
    params and Markdown or text artifacts (the table) as text. Nothing is written for a
    run that logs nothing."""

    def __init__(self) -> None:
        self._writers: dict[str, Any] = {}

    def _writer(self, info: RunInfo):
        if info.id not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[info.id] = SummaryWriter(logdir=str(info.folder), flush_secs=30)
        return self._writers[info.id]

    def params(self, info: RunInfo, params: dict[str, str]) -> None:
        rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(params.items()))
        self._writer(info).add_text("params", f"| param | value |\n|---|---|\n{rows}", 0)

    def metrics(self, info: RunInfo, metrics: dict[str, float], step: int) -> None:
        writer = self._writer(info)
        for name, value in metrics.items():
            writer.add_scalar(name, value, step)
        writer.flush()  # one flush per epoch: live in TensorBoard, readable by others

    def artifact(self, info: RunInfo, path: Path, folder: str | None) -> None:
        if path.is_file() and path.suffix in (".md", ".txt"):
            self._writer(info).add_text(legal_name(path.name), path.read_text(), 0)

    def end(self, info: RunInfo, status: str) -> None:
        writer = self._writers.pop(info.id, None)
        if writer is not None:
            writer.close()


class MlflowSink(Sink):
    """One MLflow run per run, nested under its parent's, in experiment ``experiment``
    (a child joins its parent's experiment). ``uri`` None: a local file store under
    ``default_root``. The run's lines become its ``log.txt`` artifact when it ends."""

    names_runs = True
    MAX_PARAM_CHARS = 6000  # MLflow's limit on a param's value
    BATCH = 100  # MLflow takes at most 100 params and 1000 metrics per call

    def __init__(self, uri: str | None, experiment: str, default_root: Path):
        if not installed("mlflow"):
            raise ConfigError(f"tracking.mlflow=true needs MLflow: {MLFLOW_INSTALL}")
        uri = uri or (Path(default_root).absolute() / "mlruns").as_uri()
        scheme = uri.split(":", 1)[0] if "://" in uri else "file"
        if scheme in SQL_SCHEMES and not installed("sqlalchemy"):
            raise ConfigError(
                f"tracking.uri={uri} is an SQL store, which needs the full MLflow package "
                "(pip install mlflow); mlflow-skinny serves file stores and servers"
            )
        if scheme == "file":
            # MLflow 3.17 refuses its plain file store unless this is set
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.uri, self.experiment = uri, experiment
        self.client = MlflowClient(tracking_uri=uri)
        self._experiment_id: str | None = None
        self._lines: dict[str, list[str]] = {}

    def experiment_id(self) -> str:
        """The experiment's id, created on first use."""
        if self._experiment_id is None:
            try:
                found = self.client.get_experiment_by_name(self.experiment)
                if found is None:
                    try:
                        self._experiment_id = self.client.create_experiment(self.experiment)
                    except Exception:  # made meanwhile by another process
                        self._experiment_id = self.client.get_experiment_by_name(
                            self.experiment
                        ).experiment_id
                else:
                    self._experiment_id = found.experiment_id
            except Exception as error:
                raise ConfigError(
                    f"MLflow at tracking.uri={self.uri} refused experiment "
                    f"{self.experiment!r}: {error}"
                ) from error
        return self._experiment_id

    def start(self, info: RunInfo) -> str:
        tags = {"kdbench.folder": str(info.folder)}
        experiment_id = None
        if info.parent_id is not None:
            try:
                experiment_id = self.client.get_run(info.parent_id).info.experiment_id
            except Exception as error:
                raise ConfigError(
                    f"run {info.name!r}: its parent {info.parent_id} is not an MLflow run "
                    f"at {self.uri}; build every process's tracker from the same config"
                ) from error
            tags["mlflow.parentRunId"] = info.parent_id
        run = self.client.create_run(
            experiment_id or self.experiment_id(), run_name=info.name, tags=tags
        )
        self._lines[run.info.run_id] = []
        return run.info.run_id

    def params(self, info: RunInfo, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[: self.MAX_PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), self.BATCH):
            self.client.log_batch(info.id, params=items[i : i + self.BATCH])

    def metrics(self, info: RunInfo, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(items), self.BATCH):
            self.client.log_batch(info.id, metrics=items[i : i + self.BATCH])

    def artifact(self, info: RunInfo, path: Path, folder: str | None) -> None:
        if path.is_dir():
            self.client.log_artifacts(info.id, str(path), folder)
        else:
            self.client.log_artifact(info.id, str(path), folder)

    def line(self, info: RunInfo, text: str) -> None:
        self._lines.setdefault(info.id, []).append(text)

    def end(self, info: RunInfo, status: str) -> None:
        lines = self._lines.pop(info.id, [])
        if lines:
            self.client.log_text(info.id, "\n".join(lines) + "\n", "log.txt")
        self.client.set_terminated(info.id, status)


class Run:
    """A run being tracked; made by ``Tracker.run`` or ``Run.child``. Use it as a context
    manager (it ends FINISHED, or FAILED / KILLED on an exception) or call ``end``."""

    def __init__(self, tracker: Tracker, info: RunInfo):
        self.tracker, self.info = tracker, info
        self.ended = False

    @property
    def id(self) -> str:
        """The run's id (its MLflow run id with MLflow on): the parent of a child made in
        another process."""
        return self.info.id

    @property
    def folder(self) -> Path:
        """The run's folder (its TensorBoard files)."""
        return self.info.folder

    def _each(self, method: str, *args: Any) -> None:
        if self.ended:
            raise RuntimeError(f"run {self.info.name!r} has ended: nothing more can be logged")
        for sink in self.tracker.sinks:
            getattr(sink, method)(self.info, *args)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log settings; nested mappings (a config) become dotted keys."""
        self._each("params", _legal_keys(flat_params(params), "params"))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log numbers measured at ``step`` (an integer >= 0, the optimiser step)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        values = {}
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                try:
                    value = float(value)  # numpy and 0-d torch numbers
                except (TypeError, ValueError):
                    raise ValueError(f"metric {key!r} must be a number, got {value!r}") from None
            values[key] = float(value)
        self._each("metrics", _legal_keys(values, "metrics"), step)

    def log_epochs(self, history: Sequence[Mapping[str, float]]) -> None:
        """Log training history entries (``fit``'s), each at its optimiser ``step``."""
        for entry in history:
            numbers = {k: v for k, v in entry.items() if k != "step"}
            # (histories written before steps were counted have epochs only)
            self.log_metrics(numbers, step=int(entry.get("step", entry["epoch"])))

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        """Keep a file or folder (e.g. the table) with the run, under ``folder``."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact {path} does not exist")
        self._each("artifact", path, folder)

    def line(self, text: str) -> None:
        """Print a line for the user (and keep it with the run)."""
        self._each("line", text)

    def child(
        self, name: str, params: Mapping[str, Any] | None = None, folder: str | Path | None = None
    ) -> Run:
        """A run nested under this one, by default in a subfolder of this one's folder."""
        return self.tracker.run(name, params, parent=self, folder=folder)

    def end(self, status: str = "FINISHED") -> None:
        """End the run (again: nothing happens)."""
        if not self.ended:
            for sink in self.tracker.sinks:
                sink.end(self.info, status)
            self.ended = True

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.end("FINISHED")
        else:
            self.end("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


class Tracker:
    """Starts runs and hands their measurements to ``sinks``. A run without a folder gets
    a subfolder of its parent's, or at the top ``<root>/<name>-<8 random hex digits>``."""

    def __init__(self, sinks: Iterable[Sink], root: str | Path):
        sinks = list(sinks)
        naming = [s for s in sinks if s.names_runs]
        if len(naming) > 1:
            raise ValueError(f"at most one sink may name runs, got {naming}")
        self.sinks = naming + [s for s in sinks if not s.names_runs]
        self.root = Path(root)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], log: Log = print) -> Tracker:
        """The tracker of a config's ``tracking`` section: the console always, TensorBoard
        and MLflow as set; default folders under ``<work_dir>/tensorboard``, the default
        MLflow store ``<work_dir>/mlruns``. Every process (each Ray worker) builds its own
        from the same config, with absolute paths."""
        settings, work_dir = cfg["tracking"], Path(cfg["work_dir"]).absolute()
        for key, (what, ok) in SETTINGS.items():
            if not ok(settings[key]):
                raise ConfigError(f"tracking.{key} must be {what}, got {settings[key]!r}")
        sinks: list[Sink] = [ConsoleSink(log)]
        if settings["tensorboard"]:
            sinks.append(TensorBoardSink())
        if settings["mlflow"]:
            sinks.append(MlflowSink(settings["uri"], settings["experiment"], work_dir))
        return cls(sinks, work_dir / "tensorboard")

    @classmethod
    def console(cls, log: Log = print) -> Tracker:
        """A tracker that only prints lines (a stage called without one)."""
        return cls([ConsoleSink(log)], Path("."))

    def run(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        parent: Run | str | None = None,
        folder: str | Path | None = None,
    ) -> Run:
        """Start a run named ``name``, nested under ``parent`` (a ``Run``, or the ``id`` of
        one started in another process), with ``params`` logged. Its files go to
        ``folder``; without one, to a subfolder of a ``Run`` parent's folder, else (a top
        run, or a child of an id) to a new folder under the tracker's root."""
        parent_id = parent.id if isinstance(parent, Run) else parent
        if folder is None and isinstance(parent, Run):
            folder = parent.folder / legal_name(name)
        elif folder is None:  # a suffix of its own: a rerun must not add to an old run's files
            folder = self.root / f"{legal_name(name)}-{uuid.uuid4().hex[:8]}"
        info = RunInfo(name, "", parent_id, Path(folder))
        run_id = None
        for sink in self.sinks:
            if sink.names_runs:
                run_id = sink.start(info)
        info.id = run_id or uuid.uuid4().hex
        for sink in self.sinks:
            if not sink.names_runs:
                sink.start(info)
        run = Run(self, info)
        if params:
            run.log_params(params)
        return run


def tensorboard_scalars(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Read back the scalars of the event files directly in ``folder`` (not its
    subfolders): {tag: [(step, value), ...]} in the order written."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at + 12 <= len(data):  # records: length, its crc, the event, its crc
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out

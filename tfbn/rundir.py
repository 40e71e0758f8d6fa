"""A run directory (`--logdir`): its layout, its one configuration, its lock, safe writes.

    config.json     the step and the options the run was started with: one run per directory
    history.csv     one row per finished epoch, rewritten whole from backup/state.json
    backup/         what a killed run resumes from: state.json (the epochs finished, their
                    history rows, the weights file of the last) and that weights file (model
                    and optimizer); a finished run keeps its final state, so nothing is
                    retrained (`EpochCheckpoint`)
    metrics.json    the final metrics, written once training has finished
    run.lock        locked (fcntl) by the process training into the directory; the OS
                    releases it when that process ends, however it ends
    archive/TIME/   what `--restart` moved aside: earlier runs are archived, never deleted
    train/ validation/ inspection/ dashboard.png ...   TensorBoard logs and the dashboard

Starting a run into a directory that holds one:

- same step and options, unfinished: it resumes;
- same step and options, finished: it reports the result and trains nothing;
- other options: refused, nothing touched, the differing options listed (`--restart`
  archives the old run and starts over);
- in use by another process: refused at once;
- a directory with other files and no `config.json`: refused, nothing touched.
"""

from __future__ import annotations

import csv
import datetime
import errno
import fcntl
import io
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from tfbn.files import write_json_atomically, write_text_atomically

# Options that change how a run is watched or exported, not what it computes.
OPTIONS_OUTSIDE_THE_RUN = ("logdir", "verbose", "live", "export", "restart")
CONFIG = "config.json"
HISTORY = "history.csv"
METRICS = "metrics.json"
BACKUP = "backup"
DASHBOARD = "dashboard.json"  # its format: tfbn.dashboard
ARCHIVE = "archive"
LOCK = "run.lock"
STATE = "state.json"  # in backup/
LEGACY_WEIGHTS = "latest.weights.h5"  # Keras BackupAndRestore's, which tfbn used before

# What metrics.json must hold for a run to be read back (`tfbn compare`), and history.csv.
REQUIRED_METRICS = ("step", "bn", "test_accuracy", "best_test_accuracy", "test_loss",
                    "epochs", "steps", "seconds", "device")
NUMERIC_METRICS = ("test_accuracy", "best_test_accuracy", "test_loss", "epochs", "steps",
                   "seconds")
REQUIRED_COLUMNS = ("epoch", "val_accuracy", "val_loss")


class RunDirectoryError(ValueError):
    """A run directory that cannot take this run; the message is one line."""


class RunDirectory:
    """The run directory at `path`, opened for one run of `step` with `options`
    (`RunConfig.to_dict()`): created or checked, locked, archived on `restart`."""

    def __init__(self, path: Path, step: str, options: dict, restart: bool = False):
        self.path = Path(path)
        self.previous_metrics = None
        self._lock_handle = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunDirectoryError(f"cannot create logdir {str(self.path)!r}: "
                                    f"{error.strerror}") from None
        self._lock()
        try:
            self._check_or_start(step, options, restart)
        except BaseException:
            self.close()
            raise

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def backup_path(self) -> Path:
        return self.path / BACKUP

    def history(self) -> dict[str, list[float]] | None:
        """The finished epochs' rows as columns: from `backup/state.json`, the commit point,
        when it exists (`history.csv` lags it by one epoch after a kill between the two),
        else from `history.csv`."""
        state = _read_state(self.backup_path)
        if state is not None:
            return _as_columns(state["history"]) if state["history"] else None
        return read_history(self.history_path)

    def checkpoint(self) -> "EpochCheckpoint":
        """The callback that keeps `backup/` and `history.csv` (see `EpochCheckpoint`)."""
        return EpochCheckpoint(self.backup_path, self.history_path)

    def write_metrics(self, metrics: dict) -> None:
        write_json_atomically(self.metrics_path, metrics)

    def close(self) -> None:
        """Releases the lock (the OS does it too, when the process ends)."""
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def _lock(self) -> None:
        path = self.path / LOCK
        try:
            handle = open(path, "a+")
        except OSError as error:
            raise RunDirectoryError(f"cannot write to logdir {str(self.path)!r}: "
                                    f"{error.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RunDirectoryError(f"logdir {str(self.path)!r} is in use by pid {owner}: "
                                    f"another run is training into it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

    def _check_or_start(self, step: str, options: dict, restart: bool) -> None:
        run = {"step": step, **options}
        if restart:
            if any(self._run_files()):
                archived = self._archive()
                print(f"--restart: what {self.path} held is archived in {archived}")
        else:
            previous = read_config(self.config_path)
            if previous is not None:
                self._check_same_run(previous, run)
                return
            if any(self._run_files()):
                raise RunDirectoryError(
                    f"logdir {str(self.path)!r} is not empty and holds no run (no "
                    f"config.json); choose a new or empty directory")
        write_json_atomically(self.config_path, run)

    def _check_same_run(self, previous: dict, run: dict) -> None:
        """Refuses other options; notes a finished run's metrics, or says it resumes."""
        differences = [f"{name} {previous.get(name)!r} -> {run[name]!r}"
                       for name in run if name not in OPTIONS_OUTSIDE_THE_RUN
                       and previous.get(name) != run[name]]
        if differences:
            raise RunDirectoryError(
                f"logdir {str(self.path)!r} holds a run with other options "
                f"({', '.join(differences)}); run it with its own options to resume or "
                f"see its result, add --restart to archive it and start over, or choose "
                f"another --logdir")
        if self.metrics_path.exists():
            self.previous_metrics = read_json(self.metrics_path)
            print(f"{self.path} holds this run, finished: it is not trained again "
                  f"(--restart archives it and starts over)")
        elif (self.backup_path / STATE).exists():
            print(f"resuming the run in {self.path}")
        elif (self.backup_path / LEGACY_WEIGHTS).exists():
            raise RunDirectoryError(
                f"logdir {str(self.path)!r} holds an unfinished run of an older tfbn "
                f"(Keras BackupAndRestore's backup), which cannot resume exactly; add "
                f"--restart to archive it and start over")

    def _run_files(self):
        return (path for path in self.path.iterdir() if path.name not in (LOCK, ARCHIVE))

    def _archive(self) -> Path:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        archive = self.path / ARCHIVE / stamp
        archive.mkdir(parents=True)
        for path in list(self._run_files()):
            path.rename(archive / path.name)
        return archive


def read_json(path: Path) -> dict:
    """A JSON object from `path`; a RunDirectoryError naming the file otherwise."""
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunDirectoryError(f"cannot read {path}: {error}") from None
    if not isinstance(content, dict):
        raise RunDirectoryError(f"{path} does not hold a JSON object (got "
                                f"{type(content).__name__}); move it aside or use --restart")
    return content


def read_finished_run(directory: Path) -> tuple[dict, dict[str, list[float]]]:
    """(metrics, history) of the finished run in `directory`, checked against the schema
    above; a ValueError naming the file otherwise."""
    directory = Path(directory)
    metrics_path, history_path = directory / METRICS, directory / HISTORY
    if not directory.is_dir():
        raise ValueError(f"run directory {str(directory)!r} is not a directory")
    if not metrics_path.is_file():
        raise ValueError(f"{str(directory)!r} is not a finished run: it has no {METRICS} "
                         f"(a run directory is made by `tfbn run --logdir DIR`)")
    metrics = read_json(metrics_path)
    missing = [key for key in REQUIRED_METRICS if key not in metrics]
    if missing:
        raise ValueError(f"{str(metrics_path)!r} lacks {', '.join(missing)}")
    not_numbers = [f"{key}={metrics[key]!r}" for key in NUMERIC_METRICS
                   if isinstance(metrics[key], bool)
                   or not isinstance(metrics[key], (int, float))]
    if not_numbers:
        raise ValueError(f"{str(metrics_path)!r} holds values that are not numbers: "
                         f"{', '.join(not_numbers)}")
    if not history_path.is_file():
        raise ValueError(f"{str(directory)!r} has {METRICS} but no {HISTORY}")
    history = read_history(history_path)
    missing = [column for column in REQUIRED_COLUMNS if column not in (history or {})]
    if missing:
        raise ValueError(f"{str(history_path)!r} lacks the column(s) {', '.join(missing)}")
    return metrics, history


def read_config(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


def read_history(path: Path) -> dict[str, list[float]] | None:
    """history.csv as columns; a repeated epoch (a resumed run redoing it) keeps its last row."""
    if not path.exists():
        return None
    rows = {}
    try:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                rows[int(row["epoch"])] = row
    except (OSError, UnicodeDecodeError, KeyError, ValueError) as error:
        raise RunDirectoryError(f"cannot read {path}: {error}") from None
    return _as_columns(rows[epoch] for epoch in sorted(rows))


def _as_columns(rows) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(float(value) if value not in ("", None) else np.nan)
    return columns


def load_trained_model(path: Path):
    """The model a run directory's run trained, with its final (or last finished epoch's)
    weights from `backup/`, compiled as the lesson compiles it; and the run's config."""
    from tfbn import steps
    from tfbn.training import resolve_bn

    path = Path(path)
    config = read_config(path / CONFIG)
    if config is None:
        raise RunDirectoryError(f"{str(path)!r} holds no run (no config.json)")
    weights = trained_weights(path / BACKUP)
    if weights is None:
        raise RunDirectoryError(f"{str(path)!r} keeps no trained weights (no "
                                f"{path / BACKUP / STATE}: the run has not finished an epoch)")
    step = steps.get(config["step"])
    lesson = step.module()
    bn = resolve_bn(step, config.get("bn"))
    model = lesson.build_model(bn) if step.uses_bn else lesson.build_model()
    model.compile(optimizer=lesson.make_optimizer(config.get("learning_rate_scale", 1.0)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    model.load_weights(weights)
    return model, config


def trained_weights(backup: Path) -> Path | None:
    """The weights file of the last finished epoch in `backup/`, or None before the first."""
    state = _read_state(Path(backup))
    if state is not None:
        return Path(backup) / state["weights"]
    legacy = Path(backup) / LEGACY_WEIGHTS
    return legacy if legacy.exists() else None


class EpochCheckpoint(keras.callbacks.Callback):
    """Keeps a run resumable with no epoch lost or repeated, whenever the process is killed.

    At each epoch's end, in this order: the weights (model and optimizer) go to a new file,
    `epoch-NNNN.weights.h5`; `state.json` is replaced atomically by one naming that file and
    holding every finished epoch's history row; `history.csv` is rewritten from it; older
    weights files are removed. `state.json` is the one commit point: a kill before it leaves
    the previous epoch's state whole, a kill after it leaves nothing to redo. At the start of
    `fit` the state is restored and `fit` goes on from the epoch after it (as Keras's
    `BackupAndRestore` does, through `model._initial_epoch`), and `history.csv` is rewritten
    from it, so it never holds a row of an epoch that must be redone.

    Put it after the callbacks that add to an epoch's logs (it records what they added).
    A non-chief worker passes `history_path=None` (no history) and `keep_when_finished=False`
    (its state is removed once `fit` has finished, as `BackupAndRestore` does by default).
    """

    def __init__(self, backup: Path, history_path: Path | None = None,
                 keep_when_finished: bool = True):
        super().__init__()
        self.backup = Path(backup)
        self.history_path = history_path
        self.keep_when_finished = keep_when_finished
        self.rows: list[dict] = []

    def on_train_begin(self, logs=None):
        state = _read_state(self.backup)
        self.rows = state["history"] if state is not None else []
        if state is not None:
            if not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(self.backup / state["weights"])
            self.model._initial_epoch = state["epoch"]  # what BackupAndRestore sets
        self._write_history()
        self._remove_other_weights(state)

    def on_epoch_end(self, epoch, logs=None):
        self.backup.mkdir(parents=True, exist_ok=True)
        weights = f"epoch-{epoch + 1:04d}.weights.h5"
        self.model.save_weights(self.backup / weights, overwrite=True)
        row = {"epoch": epoch, **{key: _number(value) for key, value in (logs or {}).items()}}
        self.rows = [*self.rows, row]
        state = {"epoch": epoch + 1, "weights": weights, "history": self.rows}
        write_json_atomically(self.backup / STATE, state)
        self._write_history()
        self._remove_other_weights(state)

    def on_train_end(self, logs=None):
        if not self.keep_when_finished:
            shutil.rmtree(self.backup, ignore_errors=True)

    def _write_history(self) -> None:
        if self.history_path is None:
            return
        if not self.rows:
            self.history_path.unlink(missing_ok=True)
            return
        keys = ["epoch", *sorted({key for row in self.rows for key in row} - {"epoch"})]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomically(self.history_path, text.getvalue())

    def _remove_other_weights(self, state: dict | None) -> None:
        keep = state["weights"] if state is not None else None
        for path in self.backup.glob("epoch-*.weights.h5"):
            if path.name != keep:
                path.unlink()


def _read_state(backup: Path) -> dict | None:
    path = backup / STATE
    if not path.exists():
        return None
    state = read_json(path)
    if not {"epoch", "weights", "history"} <= state.keys():
        raise RunDirectoryError(f"{path} is not a tfbn backup state (it lacks "
                                f"epoch, weights or history); move it aside or use --restart")
    return state


def _number(value) -> float:
    return float(np.squeeze(keras.ops.convert_to_numpy(value)))

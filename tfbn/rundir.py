"""A run directory (`--logdir`): its layout, its one configuration, its lock, safe writes.

    config.json     the step and the options the run was started with: one run per directory
    history.csv     one row per finished epoch (Keras CSVLogger, appended on resume)
    backup/         Keras BackupAndRestore state: a killed run resumes from its last finished
                    epoch, and a finished run keeps its final state (so nothing is retrained)
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
import json
import os
from pathlib import Path

import numpy as np

# Options that change how a run is watched or exported, not what it computes.
OPTIONS_OUTSIDE_THE_RUN = ("logdir", "verbose", "live", "export", "restart")
ARCHIVE = "archive"
LOCK = "run.lock"


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
        return self.path / "config.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def backup_path(self) -> Path:
        return self.path / "backup"

    def history(self) -> dict[str, list[float]] | None:
        return read_history(self.history_path)

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
        elif self.backup_path.exists():
            print(f"resuming the run in {self.path}")

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
    columns: dict[str, list[float]] = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            columns.setdefault(key, []).append(float(value) if value not in ("", None) else np.nan)
    return columns


def write_json_atomically(path: Path, content: dict) -> None:
    """Writes `content` to a temporary file beside `path`, then renames it over `path`, so a
    reader (or a kill) never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(temporary, path)


def load_trained_model(path: Path):
    """The model a run directory's run trained, with its final (or last finished epoch's)
    weights from `backup/`, compiled as the lesson compiles it; and the run's config."""
    from tfbn import steps
    from tfbn.training import resolve_bn

    path = Path(path)
    config = read_config(path / "config.json")
    if config is None:
        raise RunDirectoryError(f"{str(path)!r} holds no run (no config.json)")
    weights = path / "backup" / "latest.weights.h5"
    if not weights.exists():
        raise RunDirectoryError(f"{str(path)!r} keeps no trained weights ({weights} is "
                                f"missing: the run has not finished an epoch)")
    step = steps.get(config["step"])
    lesson = step.module()
    bn = resolve_bn(step, config.get("bn"))
    model = lesson.build_model(bn) if step.uses_bn else lesson.build_model()
    model.compile(optimizer=lesson.make_optimizer(config.get("learning_rate_scale", 1.0)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    model.load_weights(weights)
    return model, config

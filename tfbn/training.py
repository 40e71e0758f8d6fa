"""Training one codelab step with `model.fit`: data, model, callbacks, resume, metrics.

A run directory (`--logdir`) holds everything a run leaves behind:

    config.json     the step and options it was started with
    history.csv     one row per finished epoch (Keras CSVLogger, appended on resume)
    backup/         Keras BackupAndRestore state; a killed run restarts from its last epoch
    metrics.json    the final metrics, written once training has finished
    train/ validation/ ...   TensorBoard event files; dashboard.png, the codelab's view
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfbn import data, devices, steps
from tfbn.config import RunConfig

INSPECTION_SAMPLE_SIZE = 1000


def train(step_name: str, config: RunConfig | None = None, arrays=None) -> dict:
    """Runs step `step_name`'s lesson script (`tutorials/<script>.py`) as `config` says and
    returns its metrics: what `tfbn run STEP` does.

    `arrays` replaces MNIST with `((x_train, y_train), (x_test, y_test))` uint8 arrays shaped
    like `keras.datasets.mnist.load_data()`'s (tests pass tiny ones).
    """
    return steps.load(step_name).main(config or RunConfig(), datasets=arrays)


class Run:
    """What every step's lesson shares around its own model, optimizer and `model.fit`.

        run = training.Run("4.2", config)       # seed, device, strategy, run directory
        train_data, test_data = data.mnist_datasets(..., arrays=run.arrays)
        with run.scope():                       # the strategy and the precision policy
            model = build_model(run.bn)
            model.compile(...)
            model.fit(..., callbacks=run.callbacks(model))
            metrics = run.finish(model)         # metrics.json, the summary lines

    Creating it seeds every generator (`keras.utils.set_random_seed`), makes TensorFlow's
    ops deterministic, picks the strategy and precision, prints what the run will use, and
    prepares the run directory (`config.logdir`), resuming the run it holds.
    """

    def __init__(self, step_name: str, config: RunConfig | None = None, arrays=None):
        self.step = steps.get(step_name)
        self.config = config = config or RunConfig()
        self.bn = resolve_bn(self.step, config.bn)
        self.strategy = devices.make_strategy(config.strategy)
        run_dir = Path(config.logdir) if config.logdir else None
        # Only the chief writes the run directory (workers would write the same files);
        # the others keep just their own resume state beside it, so every worker resumes.
        self.logdir = run_dir if devices.is_chief(self.strategy) else None
        self.worker_backup = None
        if self.logdir is not None:
            _prepare_logdir(self.logdir, self.step, config)
        elif run_dir is not None:
            self.worker_backup = run_dir / f"backup-worker-{devices.worker_index(self.strategy)}"
            print(f"the chief writes {run_dir}; this worker keeps its resume state in "
                  f"{self.worker_backup}")
        else:
            print(f"no --logdir: metrics, TensorBoard logs and the dashboard are not kept "
                  f"(e.g. --logdir runs/{self.step.name} keeps them there)")

        keras.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()
        self.policy = devices.mixed_precision_policy(config.mixed_precision)
        self.device = devices.describe_device()
        replicas = self.strategy.num_replicas_in_sync
        self.synchronized = replicas > 1 and self.bn != "none"
        print(f"step {self.step.name}: {self.step.title}")
        print(f"device: {self.device}; strategy: {config.strategy} ({replicas} replica(s)); "
              f"precision: {self.policy}; XLA: {'on' if config.xla else 'off'}; "
              f"batch norm: {self.bn}"
              f"{' (statistics synchronized over the replicas)' if self.synchronized else ''}")
        print(f"global batch size: {config.batch_size} "
              f"({config.batch_size / replicas:g} per replica)")
        self.arrays = arrays if arrays is not None else data.load_mnist()
        self.clock = RunClock(self.logdir)

    @contextlib.contextmanager
    def scope(self):
        """Build, compile and fit in here: the strategy's scope and the precision policy."""
        with devices.precision_policy(self.policy), self.strategy.scope():
            yield

    def callbacks(self, model: keras.Model) -> list[keras.callbacks.Callback]:
        """The callbacks for `model.fit`: the run's clock, and with a run directory Keras's
        CSVLogger, TensorBoard and BackupAndRestore (resume) and the codelab's dashboard.

        It also readies the compiled `model` for the strategy: BN statistics synchronized
        over the replicas, and the multi-worker workaround of `devices`.
        """
        if self.synchronized:
            devices.synchronize_batch_norm(model)
        if devices.is_multi_worker(self.strategy):
            devices.prepare_multi_worker_fit(model)
        print(f"optimizer: {describe_optimizer(model.optimizer)}")
        if self.config.verbose:
            model.summary()
        callbacks = [self.clock]
        if self.logdir is not None:
            flat = len(model.inputs[0].shape) == 2
            callbacks += _logdir_callbacks(self.logdir, self.config, self.arrays, flat)
        elif self.worker_backup is not None:
            callbacks.append(keras.callbacks.BackupAndRestore(str(self.worker_backup)))
        return callbacks

    def finish(self, model: keras.Model) -> dict:
        """The run's metrics after `model.fit`; printed, and kept in `metrics.json`."""
        config = self.config
        epoch_logs = model.history.history
        if epoch_logs.get("val_loss"):
            # The last epoch's validation already evaluated these weights on the test set.
            test_loss = float(np.squeeze(epoch_logs["val_loss"][-1]))
            test_accuracy = float(np.squeeze(epoch_logs["val_accuracy"][-1]))
        else:  # resumed after the last epoch had finished: nothing left to train
            test_loss, test_accuracy = model.evaluate(self._test_dataset(model), verbose=0)
        history = read_history(self.logdir / "history.csv") if self.logdir is not None else None
        val_accuracies = (history["val_accuracy"] if history
                          else epoch_logs.get("val_accuracy", []))
        metrics = {
            "step": self.step.name,
            "test_accuracy": float(test_accuracy),
            "best_test_accuracy": float(max([test_accuracy, *val_accuracies])),
            "test_loss": float(test_loss),
            "epochs": model.history.params["epochs"],
            "steps": int(model.optimizer.iterations.numpy()),
            "seconds": round(self.clock.total_seconds, 1),
            "device": self.device,
            "bn": self.bn,
            "seed": config.seed,
            "batch_size": config.batch_size,
            "precision": self.policy,
            "xla": config.xla,
            "strategy": config.strategy,
            "replicas": self.strategy.num_replicas_in_sync,
            "versions": versions(),
        }
        print(f"best test accuracy over the epochs: {metrics['best_test_accuracy']:.4f}; "
              f"{metrics['steps']} steps in {metrics['seconds']:.0f} s")
        print(f"test accuracy: {test_accuracy:.4f}")
        if self.logdir is not None:
            write_json_atomically(self.logdir / "metrics.json", metrics)
            print(f"metrics: {self.logdir / 'metrics.json'}")
        if config.export and devices.is_chief(self.strategy):
            from tfbn.fold import export_inference_model
            export_inference_model(model, config.export)
            print(f"folded inference model: {config.export}")
        return metrics

    def _test_dataset(self, model: keras.Model) -> tf.data.Dataset:
        flat = len(model.inputs[0].shape) == 2
        return data.mnist_datasets(self.config.batch_size, flat=flat, arrays=self.arrays)[1]


def resolve_bn(step: steps.Step, bn: str | None) -> str:
    """The BN layer a run uses: the option if given, else custom on BN steps and none elsewhere."""
    if bn is None:
        return "custom" if step.uses_bn else "none"
    if bn != "none" and not step.uses_bn:
        raise ValueError(f"step {step.name} has no batch norm; --bn {bn} does not apply "
                         f"(BN steps: {', '.join(s.name for s in steps.STEPS.values() if s.uses_bn)})")
    return bn


class RunClock(keras.callbacks.Callback):
    """Adds `seconds` (wall time of finished epochs, across resumed sessions) and
    `learning_rate` to each epoch's logs, so CSVLogger and TensorBoard record them."""

    def __init__(self, logdir: Path | None):
        super().__init__()
        history = read_history(logdir / "history.csv") if logdir is not None else None
        self.previous_seconds = history["seconds"][-1] if history and history["seconds"] else 0.0
        self.total_seconds = self.previous_seconds

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.total_seconds = self.previous_seconds + time.perf_counter() - self.started
        if logs is not None:
            logs["seconds"] = round(self.total_seconds, 2)
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


def _logdir_callbacks(logdir: Path, config: RunConfig, arrays, flat: bool) -> list:
    from tfbn.dashboard import Dashboard
    from tfbn.tensorboard import tensorboard_callbacks

    (x_train, y_train), (x_test, y_test) = arrays
    sample = slice(0, INSPECTION_SAMPLE_SIZE)
    train_images = data.normalize_images(x_train[sample], flat=flat)
    test_images = data.normalize_images(x_test[sample], flat=flat)
    return [
        keras.callbacks.CSVLogger(str(logdir / "history.csv"), append=True),
        *tensorboard_callbacks(str(logdir), test_images, y_test[sample]),
        Dashboard(str(logdir), train_images, y_train[sample], test_images, y_test[sample],
                  live=config.live),
        keras.callbacks.BackupAndRestore(str(logdir / "backup")),
    ]


def _prepare_logdir(logdir: Path, step: steps.Step, config: RunConfig) -> None:
    """Creates the run directory, or checks that the run it holds is this one (to resume)."""
    config_path = logdir / "config.json"
    if config_path.exists():
        previous = json.loads(config_path.read_text())
        if previous.get("step") != step.name:
            raise ValueError(f"logdir {str(logdir)!r} holds a run of step {previous.get('step')}, "
                             f"not {step.name}; choose another --logdir")
        if (logdir / "backup").exists():
            print(f"resuming the run in {logdir}")
        elif (logdir / "metrics.json").exists():
            print(f"{logdir} holds a finished run; training it again from the start")
            (logdir / "history.csv").unlink(missing_ok=True)
            (logdir / "metrics.json").unlink()
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create logdir {str(logdir)!r}: {error.strerror}") from None
    write_json_atomically(config_path, {"step": step.name, **config.to_dict()})


def read_history(path: Path) -> dict[str, list[float]] | None:
    """history.csv as columns; a repeated epoch (a resumed run redoing it) keeps its last row."""
    if not path.exists():
        return None
    rows = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows[int(row["epoch"])] = row
    columns: dict[str, list[float]] = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            columns.setdefault(key, []).append(float(value) if value not in ("", None) else np.nan)
    return columns


def write_json_atomically(path: Path, content: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(temporary, path)


def versions() -> dict:
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "platform": sys.platform}


def describe_optimizer(optimizer: keras.optimizers.Optimizer) -> str:
    """"Adam, learning rate 0.0001 + 0.02 * exp(-t / 1600)", or "SGD, learning rate 0.5"."""
    learning_rate = optimizer._learning_rate  # the schedule itself, not its current value
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        description = str(learning_rate)
    else:
        description = f"{float(keras.ops.convert_to_numpy(learning_rate)):g}"
    return f"{type(optimizer).__name__}, learning rate {description}"

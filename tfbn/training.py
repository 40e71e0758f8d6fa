"""Training one codelab step with `model.fit`: data, model, callbacks, resume, metrics.

A run directory (`--logdir`) holds everything a run leaves behind:

    config.json     the step and options it was started with
    history.csv     one row per finished epoch (Keras CSVLogger, appended on resume)
    backup/         Keras BackupAndRestore state; a killed run restarts from its last epoch
    metrics.json    the final metrics, written once training has finished
    train/ validation/ ...   TensorBoard event files; dashboard.png, the codelab's view
"""

from __future__ import annotations

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
    """Trains step `step_name` ("4.2") as `config` says and returns its metrics.

    `arrays` replaces MNIST with `((x_train, y_train), (x_test, y_test))` uint8 arrays shaped
    like `keras.datasets.mnist.load_data()`'s (tests pass tiny ones).
    """
    step = steps.get(step_name)
    config = config or RunConfig()
    bn = resolve_bn(step, config.bn)
    strategy = devices.make_strategy(config.strategy)
    chief = devices.is_chief(strategy)
    run_dir = Path(config.logdir) if config.logdir else None
    # Only the chief writes the run directory (workers would write the same files);
    # the others keep just their own resume state beside it, so every worker resumes.
    logdir = run_dir if chief else None
    worker_backup = None
    if logdir is not None:
        _prepare_logdir(logdir, step, config)
    elif run_dir is not None:
        worker_backup = run_dir / f"backup-worker-{devices.worker_index(strategy)}"
        print(f"the chief writes {run_dir}; this worker keeps its resume state in {worker_backup}")
    else:
        print(f"no --logdir: metrics, TensorBoard logs and the dashboard are not kept "
              f"(e.g. --logdir runs/{step.name} keeps them there)")

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    policy = devices.mixed_precision_policy(config.mixed_precision)
    device = devices.describe_device()
    replicas = strategy.num_replicas_in_sync
    synchronized = replicas > 1 and bn != "none"
    print(f"step {step.name}: {step.title}")
    print(f"device: {device}; strategy: {config.strategy} ({replicas} replica(s)); "
          f"precision: {policy}; XLA: {'on' if config.xla else 'off'}; batch norm: {bn}"
          f"{' (statistics synchronized over the replicas)' if synchronized else ''}")
    print(f"global batch size: {config.batch_size} "
          f"({config.batch_size / replicas:g} per replica); learning rate: "
          f"{_describe_learning_rate(step, config.learning_rate_scale)}")

    arrays = arrays if arrays is not None else data.load_mnist()
    train_dataset, test_dataset = data.mnist_datasets(
        config.batch_size, flat=step.flat, seed=config.seed, arrays=arrays)
    epochs = config.epochs or step.epochs
    if config.steps_per_epoch is not None:
        train_dataset = train_dataset.repeat()

    with devices.precision_policy(policy), strategy.scope():
        model = step.build_model(bn)
        if synchronized:
            devices.synchronize_batch_norm(model)
        model.compile(optimizer=step.make_optimizer(config.learning_rate_scale),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=config.xla)
        if devices.is_multi_worker(strategy):
            devices.prepare_multi_worker_fit(model)
        if config.verbose:
            model.summary()
        clock = RunClock(logdir)
        callbacks = [clock]
        if logdir is not None:
            callbacks += _logdir_callbacks(logdir, config, arrays, step)
        elif worker_backup is not None:
            callbacks.append(keras.callbacks.BackupAndRestore(str(worker_backup)))
        model.fit(train_dataset, validation_data=test_dataset, epochs=epochs,
                  steps_per_epoch=config.steps_per_epoch, callbacks=callbacks,
                  shuffle=False,  # the dataset reshuffles itself every epoch
                  verbose=config.verbose)
        epoch_logs = model.history.history
        if epoch_logs.get("val_loss"):
            # The last epoch's validation already evaluated these weights on the test set.
            test_loss = float(np.squeeze(epoch_logs["val_loss"][-1]))
            test_accuracy = float(np.squeeze(epoch_logs["val_accuracy"][-1]))
        else:  # resumed after the last epoch had finished: nothing left to train
            test_loss, test_accuracy = model.evaluate(test_dataset, verbose=0)

    history = read_history(logdir / "history.csv") if logdir is not None else None
    val_accuracies = history["val_accuracy"] if history else epoch_logs.get("val_accuracy", [])
    metrics = {
        "step": step.name,
        "test_accuracy": float(test_accuracy),
        "best_test_accuracy": float(max([test_accuracy, *val_accuracies])),
        "test_loss": float(test_loss),
        "epochs": epochs,
        "steps": int(model.optimizer.iterations.numpy()),
        "seconds": round(clock.total_seconds, 1),
        "device": device,
        "bn": bn,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "precision": policy,
        "xla": config.xla,
        "strategy": config.strategy,
        "replicas": replicas,
        "versions": versions(),
    }
    print(f"best test accuracy over the epochs: {metrics['best_test_accuracy']:.4f}; "
          f"{metrics['steps']} steps in {metrics['seconds']:.0f} s")
    print(f"test accuracy: {test_accuracy:.4f}")
    if logdir is not None:
        write_json_atomically(logdir / "metrics.json", metrics)
        print(f"metrics: {logdir / 'metrics.json'}")
    if config.export and chief:
        from tfbn.fold import export_inference_model
        export_inference_model(model, config.export)
        print(f"folded inference model: {config.export}")
    return metrics


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


def _logdir_callbacks(logdir: Path, config: RunConfig, arrays, step: steps.Step) -> list:
    from tfbn.dashboard import Dashboard
    from tfbn.tensorboard import tensorboard_callbacks

    (x_train, y_train), (x_test, y_test) = arrays
    sample = slice(0, INSPECTION_SAMPLE_SIZE)
    train_images = data.normalize_images(x_train[sample], flat=step.flat)
    test_images = data.normalize_images(x_test[sample], flat=step.flat)
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


def _describe_learning_rate(step: steps.Step, scale: float) -> str:
    if isinstance(step.learning_rate, float):
        return f"{step.optimizer} {step.learning_rate * scale:g}"
    schedule = step.learning_rate.scaled(scale)
    return (f"{step.optimizer} {schedule.floor:g} + {schedule.peak:g} * "
            f"exp(-t / {schedule.decay_steps:g})")

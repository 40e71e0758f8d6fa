"""What every lesson shares around its own model and `model.fit`: `Run`.

A run directory (`--logdir`) holds everything a run leaves behind; `tfbn.rundir` owns its
layout, its one configuration and its lock.
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfbn import data, devices, steps
from tfbn.config import RunConfig
from tfbn.errors import NotANumberError
from tfbn.rundir import EpochCheckpoint, RunDirectory

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

        with training.Run("4.2", config) as run:   # seed, device, strategy, run directory
            train_data, test_data = data.mnist_datasets(..., arrays=run.arrays)
            model = build_model(run.bn)
            model.compile(...)
            model.fit(..., callbacks=run.callbacks(model))
            metrics = run.finish(model)            # metrics.json, the summary lines

    Creating it seeds every generator (`keras.utils.set_random_seed`), makes TensorFlow's
    ops deterministic, picks the strategy and precision, prints what the run will use, and
    opens the run directory (`config.logdir`, see `tfbn.rundir`): a new run, the same run
    resumed, or the same run finished (then `fit` restores its final state and trains
    nothing). The `with` block is the strategy's scope and the precision policy; leaving it
    releases the run directory.
    """

    def __init__(self, step_name: str, config: RunConfig | None = None, arrays=None):
        self.step = steps.get(step_name)
        self.config = config = config or RunConfig()
        self.bn = resolve_bn(self.step, config.bn)
        self.strategy = devices.make_strategy(config.strategy)
        run_dir = Path(config.logdir) if config.logdir else None
        # Only the chief writes the run directory (workers would write the same files);
        # the others keep just their own resume state beside it, so every worker resumes.
        chief = devices.is_chief(self.strategy)
        self.rundir = None
        self.worker_backup = None
        if run_dir is not None and chief:
            self.rundir = RunDirectory(run_dir, self.step.name, config.to_dict(),
                                       restart=config.restart)
        elif run_dir is not None:
            self.worker_backup = run_dir / f"backup-worker-{devices.worker_index(self.strategy)}"
            print(f"the chief writes {run_dir}; this worker keeps its resume state in "
                  f"{self.worker_backup}")
        else:
            print(f"no --logdir: metrics, TensorBoard logs and the dashboard are not kept "
                  f"(e.g. --logdir runs/{self.step.name} keeps them there)")
        try:
            self._start(arrays)
        except BaseException:
            self.close()
            raise

    def _start(self, arrays) -> None:
        config = self.config
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
        # Created outside the strategy's scope: one variable the input pipeline reads.
        self.order = data.EpochOrder(config.seed, config.steps_per_epoch)
        self.clock = RunClock(self.rundir.history() if self.rundir is not None else None)
        self._scopes = contextlib.ExitStack()

    @property
    def logdir(self) -> Path | None:
        return self.rundir.path if self.rundir is not None else None

    def __enter__(self) -> "Run":
        self._scopes.enter_context(devices.precision_policy(self.policy))
        self._scopes.enter_context(self.strategy.scope())
        return self

    def __exit__(self, *exception) -> None:
        self._scopes.close()
        self.close()

    def close(self) -> None:
        """Releases the run directory for the next run (the OS would, at the process's end)."""
        if self.rundir is not None:
            self.rundir.close()

    def callbacks(self, model: keras.Model) -> list[keras.callbacks.Callback]:
        """The callbacks for `model.fit`: the run's clock, the NaN stop, `EpochSeeds` (each
        epoch's data order and dropout masks from (seed, epoch)), and with a run directory
        TensorBoard, the codelab's dashboard and the `EpochCheckpoint` that resumes a killed
        run exactly (and writes `history.csv`).

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
        callbacks = [self.clock, StopOnNaN(), EpochSeeds(self.order)]
        if self.config.stop_at is not None:
            callbacks.append(StopAtAccuracy(self.config.stop_at))
        if self.rundir is not None:
            callbacks += _logdir_callbacks(self.logdir, self.config, self.arrays,
                                           data.takes_flat_images(model))
            callbacks.append(self.rundir.checkpoint())  # last: it keeps what the others logged
        elif self.worker_backup is not None:
            callbacks.append(EpochCheckpoint(self.worker_backup, keep_when_finished=False))
        return callbacks

    def finish(self, model: keras.Model) -> dict:
        """The run's metrics after `model.fit`; printed, and kept in `metrics.json`."""
        config = self.config
        epoch_logs = model.history.history
        trained = bool(epoch_logs.get("val_loss"))
        if not trained and self.rundir is not None and self.rundir.previous_metrics is not None:
            previous = self.rundir.previous_metrics  # a finished run: nothing was trained
            print(f"best test accuracy over the epochs: {previous['best_test_accuracy']:.4f}")
            print(f"test accuracy: {previous['test_accuracy']:.4f} (the finished run's, "
                  f"{self.rundir.metrics_path})")
            return previous
        if trained:
            # The last epoch's validation already evaluated these weights on the test set.
            test_loss = float(np.squeeze(epoch_logs["val_loss"][-1]))
            test_accuracy = float(np.squeeze(epoch_logs["val_accuracy"][-1]))
        else:  # resumed after the last epoch had finished, its metrics never written
            test_loss, test_accuracy = model.evaluate(self._test_dataset(model), verbose=0)
        history = self.rundir.history() if self.rundir is not None else None
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
            "cpu_seconds": round(self.clock.total_cpu_seconds, 1),
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
        if self.rundir is not None:
            self.rundir.write_metrics(metrics)
            print(f"metrics: {self.rundir.metrics_path}")
        if config.export and devices.is_chief(self.strategy):
            from tfbn.fold import export_inference_model
            export_inference_model(model, config.export)
            print(f"folded inference model: {config.export}")
        return metrics

    def _test_dataset(self, model: keras.Model) -> tf.data.Dataset:
        return data.mnist_datasets(self.config.batch_size, flat=data.takes_flat_images(model),
                                   arrays=self.arrays)[1]


def resolve_bn(step: steps.Step, bn: str | None) -> str:
    """The BN layer a run uses: the option if given, else custom on BN steps and none elsewhere."""
    if bn is None:
        return "custom" if step.uses_bn else "none"
    if bn != "none" and not step.uses_bn:
        raise ValueError(f"step {step.name} has no batch norm; --bn {bn} does not apply "
                         f"(BN steps: {', '.join(s.name for s in steps.STEPS.values() if s.uses_bn)})")
    return bn


class RunClock(keras.callbacks.Callback):
    """Adds `seconds` and `cpu_seconds` (wall and process CPU time of the finished epochs,
    evaluation and callbacks included, across resumed sessions) and `learning_rate` to each
    epoch's logs, so history.csv and TensorBoard record them."""

    def __init__(self, history: dict | None):
        super().__init__()
        self.previous_seconds = _last(history, "seconds", 0.0)
        # A run directory from before cpu_seconds was logged: its CPU time is unknown.
        self.previous_cpu_seconds = _last(history, "cpu_seconds",
                                          0.0 if not history or not history.get("seconds")
                                          else float("nan"))
        self.total_seconds = self.previous_seconds
        self.total_cpu_seconds = self.previous_cpu_seconds

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()
        self.started_cpu = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.total_seconds = self.previous_seconds + time.perf_counter() - self.started
        self.total_cpu_seconds = (self.previous_cpu_seconds
                                  + time.process_time() - self.started_cpu)
        if logs is not None:
            logs["seconds"] = round(self.total_seconds, 2)
            logs["cpu_seconds"] = round(self.total_cpu_seconds, 2)
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


def _last(history: dict | None, column: str, default: float) -> float:
    values = (history or {}).get(column)
    return float(values[-1]) if values else default


class StopAtAccuracy(keras.callbacks.Callback):
    """Ends training after the first epoch whose test accuracy reaches `target`
    (`--stop-at`): the epochs before it are what the full run would have trained."""

    def __init__(self, target: float):
        super().__init__()
        self.target = target

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get("val_accuracy", 0.0) >= self.target:
            print(f"test accuracy {logs['val_accuracy']:.4f} >= {self.target:g} after epoch "
                  f"{epoch + 1}: stopping (--stop-at)")
            self.model.stop_training = True


class EpochSeeds(keras.callbacks.Callback):
    """Makes each epoch's randomness a function of (seed, epoch) alone, so that a run resumed
    at epoch e draws what the uninterrupted run drew: it sets `order.epoch` (the data order,
    see `data.EpochOrder`) and every Keras random-seed state in the model (dropout's masks)
    to `[its initial seed, e * 2**32]` as the epoch begins. (Keras keeps those states out of
    saved weights, so a resumed run would otherwise redraw the first epoch's masks.)"""

    def __init__(self, order: data.EpochOrder):
        super().__init__()
        self.order = order

    def on_train_begin(self, logs=None):
        self._seed_states = [(state, int(keras.ops.convert_to_numpy(state)[0]))
                             for state in self.model.variables
                             if state.name == "seed_generator_state"]

    def on_epoch_begin(self, epoch, logs=None):
        self.order.epoch.assign(epoch)
        for state, seed in self._seed_states:
            state.assign(np.array([seed, epoch * 2**32], dtype=state.dtype))


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first batch whose loss is NaN or infinite, with a message (Keras's
    TerminateOnNaN stops silently); the run directory keeps the last finished epoch."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(np.squeeze(loss))):
            raise NotANumberError(
                f"the training loss became {float(np.squeeze(loss))} at batch {batch}: the "
                f"learning rate is too high for this network (try a lower "
                f"--learning-rate-scale); the run directory keeps its last finished epoch")


def _logdir_callbacks(logdir: Path, config: RunConfig, arrays, flat: bool) -> list:
    from tfbn.dashboard import Dashboard
    from tfbn.tensorboard import tensorboard_callbacks

    (x_train, y_train), (x_test, y_test) = arrays
    sample = slice(0, INSPECTION_SAMPLE_SIZE)
    train_images = data.normalize_images(x_train[sample], flat=flat)
    test_images = data.normalize_images(x_test[sample], flat=flat)
    return [
        *tensorboard_callbacks(str(logdir), test_images, y_test[sample]),
        Dashboard(str(logdir), train_images, y_train[sample], test_images, y_test[sample],
                  live=config.live),
    ]


def versions() -> dict:
    """What produced a run's numbers: the library versions and tfbn's commit (when tfbn runs
    from a git checkout, with "+changes" if it has uncommitted ones; else None)."""
    import tfbn

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "platform": sys.platform,
            "tfbn": tfbn.__version__, "commit": source_commit()}


def source_commit() -> str | None:
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def describe_optimizer(optimizer: keras.optimizers.Optimizer) -> str:
    """"Adam, learning rate 0.0001 + 0.02 * exp(-t / 1600)", or "SGD, learning rate 0.5"."""
    learning_rate = optimizer._learning_rate  # the schedule itself, not its current value
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        description = str(learning_rate)
    else:
        description = f"{float(keras.ops.convert_to_numpy(learning_rate)):g}"
    return f"{type(optimizer).__name__}, learning rate {description}"

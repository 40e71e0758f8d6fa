"""Where a run executes: the device, the distribution strategy, the precision policy."""

from __future__ import annotations

import contextlib
import functools
import os

import keras
import tensorflow as tf


def accelerator() -> str:
    """"GPU" when TensorFlow sees one, "CPU" otherwise."""
    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def describe_device() -> str:
    """One line naming what the run trains on, e.g. "GPU:0 (NVIDIA A100)" or "CPU (2 cores)"."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
        return f"GPU x{len(gpus)} ({', '.join(names)})"
    return f"CPU ({os.cpu_count()} cores)"


def make_strategy(name: str) -> tf.distribute.Strategy:
    """default: one device; mirrored: every local GPU (without one, every logical CPU);
    multiworker: this machine's devices, one worker of the cluster TF_CONFIG describes.

    Every call in a process gets the same mirrored or multi-worker strategy: a second
    MultiWorkerMirroredStrategy fails (TensorFlow configures collectives once), and a
    second MirroredStrategy reuses the first one's collective keys, so its all-reduces
    can fail with "Shape mismatch in the collective instance" (tensorflow/tensorflow#62790).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return _mirrored_strategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multiworker' needs the TF_CONFIG environment variable "
                             "(cluster and task of this worker); see docs/distribute.md")
        return _multi_worker_strategy()
    raise ValueError(f"strategy must be default, mirrored or multiworker; got {name!r}")


@functools.cache
def _mirrored_strategy() -> tf.distribute.MirroredStrategy:
    return tf.distribute.MirroredStrategy()


@functools.cache
def _multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's task index in a multi-worker cluster; 0 everywhere else."""
    return strategy.cluster_resolver.task_id if is_multi_worker(strategy) else 0


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files. In a multi-worker cluster only the
    chief does, else every worker would write the same metrics, logs and dashboard."""
    return strategy.extended.should_checkpoint


def synchronize_batch_norm(model: keras.Model) -> int:
    """Makes every BN layer of `model` all-reduce its batch statistics across replicas,
    so N replicas of batch B normalise like one device with batch N*B; returns how many.

    Both layers read the flag when they are called, so this works on a built model
    (before `fit` traces it).
    """
    from tfbn.practice import batch_norm_layers

    layers = [layer for _, layer in batch_norm_layers(model)]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def prepare_multi_worker_fit(model: keras.Model) -> None:
    """Works around two Keras 3 bugs that stop `fit` and `evaluate` under
    MultiWorkerMirroredStrategy (keras-team/keras#20585); call `fit` and `evaluate`
    inside `strategy.scope()` afterwards.

    - Before training, Keras reduces the first batch across workers to learn its shapes
      and fails on the (inputs, labels) pair; without a strategy recorded on the model
      it skips that and traces in the scope's strategy instead.
    - Keras averages each logged metric over the replicas with `reduce(MEAN, axis=0)`,
      which fails on scalars; given shape [1], it returns the scalar average it meant to.
    """
    model._distribute_strategy = None

    def with_vector_logs(step):
        def step_with_vector_logs(data):
            return {name: tf.reshape(value, [1]) for name, value in step(data).items()}
        return step_with_vector_logs

    model.train_step = with_vector_logs(model.train_step)
    model.test_step = with_vector_logs(model.test_step)


def mixed_precision_policy(enabled: bool) -> str:
    """mixed_float16 on a GPU (tensor cores), mixed_bfloat16 on a CPU (no loss scaling needed)."""
    if not enabled:
        return "float32"
    return "mixed_float16" if accelerator() == "GPU" else "mixed_bfloat16"


@contextlib.contextmanager
def precision_policy(policy: str):
    """Sets Keras's global dtype policy for the block and restores the previous one after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)

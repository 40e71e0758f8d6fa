"""Where a run executes: the device, the distribution strategy, the precision policy."""

from __future__ import annotations

import contextlib
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
    """default: one device; mirrored: all local GPUs (or CPUs); multiworker: reads TF_CONFIG."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multiworker' needs the TF_CONFIG environment variable "
                             "(cluster and task of this worker)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be default, mirrored or multiworker; got {name!r}")


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

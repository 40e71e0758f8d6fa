"""Shared fixtures. Tiny synthetic data stands in for MNIST wherever loading is not the point."""

import numpy as np
import pytest
import tensorflow as tf

# Two logical CPUs let the tf.distribute tests run two replicas on one machine.
# TensorFlow accepts this only before it initialises its devices, so it runs when
# pytest imports this file, before any test module.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)


def make_tiny_mnist(train_size: int = 64, test_size: int = 32, seed: int = 0):
    """MNIST-shaped uint8 digits a small net can learn: class k lights up row band k."""
    rng = np.random.default_rng(seed)

    def split(size):
        labels = rng.integers(0, 10, size=size).astype(np.uint8)
        images = rng.integers(0, 40, size=(size, 28, 28)).astype(np.uint8)
        for index, label in enumerate(labels):
            images[index, 2 + 2 * label:4 + 2 * label, 4:24] = 255
        return images, labels

    return split(train_size), split(test_size)


@pytest.fixture(scope="session")
def tiny_mnist():
    return make_tiny_mnist()


@pytest.fixture(scope="session")
def two_replica_strategy():
    """A MirroredStrategy over the two logical CPUs, one for the whole session.

    A second MirroredStrategy in the same process reuses the first one's collective
    keys, and its all-reduces then fail with "Shape mismatch in the collective
    instance" (tensorflow/tensorflow#62790); sharing one instance avoids that.
    """
    devices = [device.name for device in tf.config.list_logical_devices("CPU")[:2]]
    assert len(devices) == 2, "two logical CPUs are configured at the top of this file"
    return tf.distribute.MirroredStrategy(devices)


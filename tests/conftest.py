"""Shared fixtures. Tiny synthetic data stands in for MNIST wherever loading is not the point."""

import numpy as np
import pytest


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

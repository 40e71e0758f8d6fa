"""Registers the marker Keras's vendored test suite uses (Keras's own conftest does)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_trainable_backend: needs a backend that can train (TensorFlow can)"
    )

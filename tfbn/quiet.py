"""TensorFlow's start-up logs, kept quiet unless the user asks for them.

Importing TensorFlow prints lines from its C++ core (oneDNN, the CUDA stub, CPU features)
before absl logging is initialized, so TF_CPP_MIN_LOG_LEVEL does not reach them
(tensorflow/tensorflow#100442); on a machine without a GPU, the first device query adds
"failed call to cuInit", which reads like a failure and is not one. tfbn therefore sets
TF_CPP_MIN_LOG_LEVEL=2 and points the process's file descriptor 2 at /dev/null for the
import and that first query only. A user who has set TF_CPP_MIN_LOG_LEVEL themselves (for
example TF_CPP_MIN_LOG_LEVEL=0) gets every log, untouched.
"""

from __future__ import annotations

import contextlib
import os
import sys

USER_CHOSE_LOGS = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def native_stderr_silenced():
    """Sends what C++ code writes to stderr to /dev/null inside the block (unless the user
    chose their own log level). Python exceptions still surface, after the block."""
    if USER_CHOSE_LOGS:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def import_tensorflow() -> None:
    """Imports TensorFlow (and Keras) quietly, if nothing has imported it yet."""
    if "tensorflow" in sys.modules:
        return
    with native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe's errors, once

"""TensorFlow's start-up logs, kept quiet unless the user asks for them.

Importing TensorFlow prints lines from its C++ core (oneDNN, the CUDA stub, CPU features)
before absl logging is initialized, so TF_CPP_MIN_LOG_LEVEL does not reach them
(tensorflow/tensorflow#100442); on a machine without a GPU, the first device query adds
"failed call to cuInit", which reads like a failure and is not one. tfbn therefore sets
TF_CPP_MIN_LOG_LEVEL=2 and points the process's file descriptor 2 at /dev/null for the
import and that first query only: `import tfbn` does not import TensorFlow, it installs an
import hook (`on_import`), so the first import of TensorFlow or Keras after it is quiet,
from wherever it comes. A user who has set TF_CPP_MIN_LOG_LEVEL themselves (for example
TF_CPP_MIN_LOG_LEVEL=0) gets every log, untouched.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
from typing import Callable

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


class _ImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it hands the first imports of `tensorflow` and `keras`, from
    wherever they come, a loader that runs them with native stderr silenced, and calls
    `after_keras` once Keras has loaded."""

    def __init__(self, after_keras: Callable[[], None]):
        self.pending = {"tensorflow", "keras"}
        self.after_keras = after_keras

    def find_spec(self, fullname, path=None, target=None):
        # TensorFlow asks for Keras's spec (find_spec) before importing it: only running a
        # module takes it off the list.
        if fullname not in self.pending or fullname in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, fullname, self)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader, name: str, hook: _ImportHook):
        self.loader = loader
        self.name = name
        self.hook = hook

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.hook.pending.discard(self.name)
        with native_stderr_silenced():
            self.loader.exec_module(module)
            if self.name == "tensorflow":
                module.config.list_physical_devices()  # the CUDA probe's errors, once
        if self.name == "keras":
            self.hook.after_keras()

    def __getattr__(self, name):
        return getattr(self.loader, name)


def on_import(after_keras: Callable[[], None]) -> None:
    """From now on, the first import of TensorFlow or Keras is quiet, and `after_keras` runs
    once Keras is loaded (at once, if it is already)."""
    if "keras" in sys.modules:
        after_keras()
        return
    sys.meta_path.insert(0, _ImportHook(after_keras))

"""The errors a user causes and the `tfbn` command reports as one line (`tfbn.cli`).

They live apart from the modules that raise them, so that the command line can catch them
without importing TensorFlow. Bad values and files raise ValueError (or a subclass, such as
`tfbn.rundir.RunDirectoryError`).
"""


class DataUnavailableError(RuntimeError):
    """No source gave a verified copy; `attempts` lists (source, why it failed) in order."""

    def __init__(self, dataset: str, attempts: list[tuple[str, str]]):
        self.dataset = dataset
        self.attempts = attempts
        tried = "\n".join(f"  - {source}: {reason}" for source, reason in attempts)
        super().__init__(f"no source could provide a verified copy of {dataset}; tried:\n{tried}")


class DataDirError(OSError):
    """The data directory cannot be created or written."""


class NotANumberError(RuntimeError):
    """Training reached a loss that is not a number."""

"""Experiments that put the claims made about batch norm to the test.

Each experiment is a module here with
    TITLE      one line for `tfbn list`
    Config     a dataclass of its options (a short default; the full setting as options),
               with an `outdir` field and a `seed` field
    run(config, arrays=None) -> dict
               trains what it needs, writes `<outdir>/figure.png` and `<outdir>/metrics.json`,
               returns the metrics; `arrays` replaces the dataset (tests pass tiny data)
Its tutorial script, `tutorials/experiment_<name>.py`, runs it; so does `tfbn experiment NAME`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = (
    "paper_figure",
    "vanishing_gradients",
    "learning_rates",
    "dropout",
    "weight_decay",
    "moving_averages",
    "d2l_lenet",
)


def get(name: str) -> ModuleType:
    """The experiment module called `name`; a ValueError listing the known ones otherwise."""
    if name not in NAMES:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {', '.join(NAMES)}")
    return importlib.import_module(f"tfbn.experiments.{name}")

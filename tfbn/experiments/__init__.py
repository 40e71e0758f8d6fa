"""Experiments that put the claims made about batch norm to the test.

Each experiment is a module here with
    TITLE      one line for `tfbn list`: `TITLES[name]`, from this registry
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

# Each experiment's one line, for `tfbn list` and its module's TITLE (kept here, so that
# listing them imports no TensorFlow).
TITLES = {
    "paper_figure":
        "the BN paper's Figure 1: 3x100 sigmoid net, accuracy and one sigmoid's input",
    "vanishing_gradients":
        "vanishing gradients: per-layer gradient norms of the 5-layer sigmoid net, +/- BN",
    "learning_rates":
        "higher learning rates: a learning-rate sweep of the 5-layer sigmoid net, +/- BN",
    "dropout":
        "dropout vs batch norm on the conv net: test accuracy and the train/test gap",
    "weight_decay":
        "L2 weight decay with batch norm: the usual strength vs one fifth of it",
    "moving_averages":
        "moving averages at inference: population stats, batch of one, debiasing, momentum",
    "d2l_lenet":
        "cross-check with d2l.ai: BN LeNet (sigmoid) on Fashion-MNIST, scratch vs built-in vs none",
    "placement":
        "BN before or after the activation (ReLU, sigmoid), with and without the bias before it",
    "per_channel":
        "conv BN statistics per channel (over N, H, W) vs per activation (over N only)",
    "lrn":
        "local response normalization (AlexNet's) vs BN vs both vs neither, on the conv net",
    "augmentation":
        "image distortion (shifts, rotations) at a few strengths, with and without BN",
    "batch_size":
        "small training batches: BN vs renorm vs ghost batches vs group and layer norm",
    "noisy_bn":
        "Santurkar et al.'s noisy BN: BN plus shifting noise vs BN vs none; loss smoothness",
    "fine_tuning":
        "fine-tuning with BN: frozen (Keras 3 trainable=False) vs training vs Keras 2's way",
}
NAMES = tuple(TITLES)


def get(name: str) -> ModuleType:
    """The experiment module called `name`; a ValueError listing the known ones otherwise."""
    if name not in NAMES:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {', '.join(NAMES)}")
    return importlib.import_module(f"tfbn.experiments.{name}")

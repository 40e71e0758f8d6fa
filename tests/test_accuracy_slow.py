"""Accuracy bands of the codelab steps on real MNIST: full runs, `pytest -m slow` only.

On a 2-core CPU the whole set takes about an hour and a half (README, results table).
"""

import pytest

from tfbn import steps, training
from tfbn.config import RunConfig

# Each step must come within 0.3 points of the codelab's maximum test accuracy; 4.2 must
# reach the 99.5% the issue asks for.
TOLERANCE = 0.003


@pytest.mark.slow
@pytest.mark.parametrize("name", list(steps.STEPS))
def test_step_reaches_the_codelab_accuracy(name, tmp_path):
    step = steps.get(name)
    metrics = training.train(name, RunConfig(logdir=str(tmp_path), verbose=2))
    assert metrics["best_test_accuracy"] >= step.codelab_accuracy - TOLERANCE
    if name == "4.2":
        assert metrics["best_test_accuracy"] >= 0.995


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, step in steps.STEPS.items() if step.uses_bn])
def test_builtin_layer_reaches_the_same_band(name, tmp_path):
    step = steps.get(name)
    metrics = training.train(name, RunConfig(logdir=str(tmp_path), bn="keras", verbose=2))
    assert metrics["best_test_accuracy"] >= step.codelab_accuracy - TOLERANCE

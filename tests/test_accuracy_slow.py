"""Accuracy bands of the codelab steps on real MNIST: full runs, `pytest -m slow` only.

On a 2-core CPU the whole set takes about an hour and a half (README, results table).
"""

import pytest

from tfbn import rundir, steps, training
from tfbn.config import RunConfig

# Each step must come within 0.3 points of the codelab's maximum test accuracy; 4.2 must
# reach the 99.5% the issue asks for.
TOLERANCE = 0.003


CODELAB_STEPS = [name for name, step in steps.STEPS.items() if step.codelab_accuracy]


@pytest.mark.slow
@pytest.mark.parametrize("name", CODELAB_STEPS)
def test_step_reaches_the_codelab_accuracy(name, tmp_path):
    step = steps.get(name)
    metrics = training.train(name, RunConfig(logdir=str(tmp_path), verbose=2))
    assert metrics["best_test_accuracy"] >= step.codelab_accuracy - TOLERANCE
    if name == "4.2":
        assert metrics["best_test_accuracy"] >= 0.995


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in CODELAB_STEPS if steps.get(name).uses_bn])
def test_builtin_layer_reaches_the_same_band(name, tmp_path):
    step = steps.get(name)
    metrics = training.train(name, RunConfig(logdir=str(tmp_path), bn="keras", verbose=2))
    assert metrics["best_test_accuracy"] >= step.codelab_accuracy - TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("bn", ["custom", "keras"])
def test_5_0_reaches_its_targets_by_their_epochs(bn, tmp_path):
    """One seed: the targets are a median of 3 seeds (benchmarks/time_to_accuracy.py), so
    a single seed may miss one by about the test set's noise (0.07 points at 99.5%)."""
    training.train("5.0", RunConfig(logdir=str(tmp_path), bn=bn, verbose=2))
    accuracies = rundir.read_history(tmp_path / rundir.HISTORY)["val_accuracy"]
    for epoch, target in steps.get("5.0").targets:
        assert accuracies[epoch - 1] >= target - 0.001, (epoch, accuracies)

"""Experiments paper_figure, vanishing_gradients, learning_rates and moving_averages:
their hand-made measurements against NumPy, their options, and a tiny run of each."""

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from spread_checks import assert_spread_of

from tfbn import models, steps
from tfbn.experiments import (common, learning_rates, moving_averages, paper_figure,
                              vanishing_gradients)

EPSILON = 1e-3  # the BN layers' default


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def randomize_bn_state(model, seed=1):
    """Moving statistics and scales far from their initial values, so that using the
    wrong statistics, or changing them, shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if "_bn" in layer.name:
            size = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 3, size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.1, 5, size).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 2, size).astype("float32"))
            layer.beta.assign(rng.normal(0, 1, size).astype("float32"))


def numpy_pre_activations(model, images, layer_count):
    """The input of sigmoid `layer_count` of a models.dense_network, in NumPy, BN layers
    normalizing with the batch statistics of `images` (biased variance)."""
    x = images.astype(np.float64)
    for index in range(1, layer_count + 1):
        dense = model.get_layer(f"dense{index}")
        z = x @ dense.kernel.numpy()
        if dense.use_bias:
            z = z + dense.bias.numpy()
        else:
            bn = model.get_layer(f"dense{index}_bn")
            z = (bn.gamma.numpy() * (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0) + EPSILON)
                 + bn.beta.numpy())
        if index == layer_count:
            return z
        x = sigmoid(z)


def non_trainable_values(model):
    return [variable.numpy().copy() for variable in model.non_trainable_variables]


def assert_state_unchanged(model, before):
    for variable, value in zip(model.non_trainable_variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(0, 1, (48, 784)).astype("float32")


# --- call_in_training_mode -----------------------------------------------------------

def test_call_in_training_mode_uses_batch_statistics_and_leaves_the_model_as_it_was(images):
    keras.utils.set_random_seed(0)
    model = models.dense_network((8, 6), bn="custom")
    randomize_bn_state(model)
    before = non_trainable_values(model)
    outputs = common.call_in_training_mode(model, images)
    assert_state_unchanged(model, before)
    # The same call without the guard does move the statistics, and gives the same outputs.
    np.testing.assert_allclose(model(images, training=True).numpy(), outputs.numpy(),
                               rtol=1e-6)
    assert not np.array_equal(model.get_layer("dense1_bn").moving_mean.numpy(), before[0])


# --- paper_figure ----------------------------------------------------------------------

@pytest.mark.parametrize("bn", ["none", "custom", "keras"])
def test_sigmoid_inputs_match_numpy(images, bn):
    keras.utils.set_random_seed(0)
    model = paper_figure.build_model(bn)
    if bn != "none":
        randomize_bn_state(model)
    before = non_trainable_values(model)
    measured = paper_figure.sigmoid_inputs(model, images)
    expected = numpy_pre_activations(model, images, 3)
    assert measured.shape == (len(images), 100)
    np.testing.assert_allclose(measured, expected, rtol=1e-4, atol=1e-4)
    assert_state_unchanged(model, before)


def test_percentile_recorder_records_numpy_percentiles_of_one_unit(images):
    keras.utils.set_random_seed(0)
    model = paper_figure.build_model("custom")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    randomize_bn_state(model)
    recorder = paper_figure.SigmoidInputPercentiles(images, unit=7)
    recorder.set_model(model)
    recorder.on_train_begin()
    expected = np.percentile(numpy_pre_activations(model, images, 3)[:, 7], (15, 50, 85))
    assert recorder.steps == [0]
    np.testing.assert_allclose(recorder.percentiles[0], expected, rtol=1e-4, atol=1e-4)
    assert recorder.percentiles[0][0] < recorder.percentiles[0][1] < recorder.percentiles[0][2]


# --- vanishing_gradients ---------------------------------------------------------------

def numpy_kernel_gradients(model, images, labels):
    """Backpropagation by hand through a bias-ful sigmoid dense_network, mean cross-entropy."""
    dense_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    activations = [images.astype(np.float64)]
    for layer in dense_layers[:-1]:
        activations.append(sigmoid(activations[-1] @ layer.kernel.numpy() + layer.bias.numpy()))
    logits = activations[-1] @ dense_layers[-1].kernel.numpy() + dense_layers[-1].bias.numpy()
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    delta = (probabilities - np.eye(10)[labels]) / len(images)
    gradients = {}
    for index in range(len(dense_layers) - 1, -1, -1):
        layer = dense_layers[index]
        gradients[layer.name] = activations[index].T @ delta
        below = activations[index]
        delta = (delta @ layer.kernel.numpy().T) * below * (1 - below)
    return gradients


def test_gradient_norms_match_numpy_backpropagation(images):
    keras.utils.set_random_seed(0)
    model = models.dense_network((16, 12, 8), activation="sigmoid")
    labels = np.arange(len(images)) % 10
    norms = vanishing_gradients.gradient_norms(model, images, labels)
    expected = numpy_kernel_gradients(model, images, labels)
    assert list(norms) == ["dense1", "dense2", "dense3", "logits"]
    for name, gradient in expected.items():
        assert norms[name] == pytest.approx(np.sqrt(np.sum(gradient ** 2)), rel=1e-4)


def test_gradient_norms_of_a_bn_network_leave_its_statistics_alone(images):
    keras.utils.set_random_seed(0)
    model = steps.load("4.0").build_model("custom")
    randomize_bn_state(model)
    before = non_trainable_values(model)
    norms = vanishing_gradients.gradient_norms(model, images, np.arange(len(images)) % 10)
    assert list(norms) == ["dense1", "dense2", "dense3", "dense4", "logits"]
    assert all(np.isfinite(value) and value > 0 for value in norms.values())
    assert_state_unchanged(model, before)


# --- learning_rates --------------------------------------------------------------------

def test_learning_rates_are_parsed_and_sorted():
    assert learning_rates.parse_learning_rates("0.1, 0.001,1e-2") == [0.001, 0.01, 0.1]


@pytest.mark.parametrize("text, message", [("0.1,fast", "comma-separated numbers"),
                                           ("0.1,-1", "positive"), ("0.1,nan", "positive"),
                                           ("0.1,0.1", "repeat")])
def test_bad_learning_rates_are_refused_by_name(text, message):
    with pytest.raises(ValueError, match=f"learning_rates must .*{message}"):
        learning_rates.Config(learning_rates=text)


# --- vanishing_gradients and learning_rates: a tiny run with two seeds ------------------

@dataclasses.dataclass
class RecordedRun:
    """A tiny run's metrics and outdir, and what each of its `fit` calls started from: the
    Dense kernels, and the labels of the batches its pipeline gives for the run's steps.
    The fits come network by network, seed by seed: no BN at seeds 0 and 1, then BN."""

    metrics: dict
    outdir: Path
    kernels: list = dataclasses.field(default_factory=list)
    labels: list = dataclasses.field(default_factory=list)


def run_recording_fits(module, options: dict, arrays, outdir: Path) -> RecordedRun:
    config = module.Config(**options, seeds=2, outdir=str(outdir), verbose=0)
    recorded = RecordedRun({}, outdir)
    fit = keras.Model.fit

    def recording_fit(self, dataset, *args, **kwargs):
        recorded.kernels.append([layer.kernel.numpy() for layer in self.layers
                                 if isinstance(layer, keras.layers.Dense)])
        steps_in_run = kwargs["steps_per_epoch"] * kwargs["epochs"]
        recorded.labels.append(np.concatenate(
            [labels.numpy() for _, labels in dataset.take(steps_in_run)]))
        return fit(self, dataset, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras.Model, "fit", recording_fit)
        recorded.metrics = module.run(config, arrays=arrays)
    return recorded


@pytest.fixture(scope="module")
def vanishing_gradients_run(tiny_mnist, tmp_path_factory):
    return run_recording_fits(
        vanishing_gradients, dict(steps=4, record_every=2, batch_size=16, probe_size=32),
        tiny_mnist, tmp_path_factory.mktemp("vanishing_gradients"))


@pytest.fixture(scope="module")
def learning_rates_run(tiny_mnist, tmp_path_factory):
    return run_recording_fits(
        learning_rates, dict(learning_rates="0.1", steps=2, record_every=1, batch_size=16),
        tiny_mnist, tmp_path_factory.mktemp("learning_rates"))


@pytest.mark.parametrize("run_name", ["vanishing_gradients_run", "learning_rates_run"])
def test_two_seed_run_writes_the_figure_and_every_seeds_metrics(run_name, request):
    recorded = request.getfixturevalue(run_name)
    assert (recorded.outdir / "figure.png").stat().st_size > 10_000
    saved = json.loads((recorded.outdir / "metrics.json").read_text())
    name = run_name.removesuffix("_run")
    assert saved["experiment"] == recorded.metrics["experiment"] == name
    assert saved["seeds"] == [0, 1] and saved["test_size"] == 32
    assert saved["networks"] == recorded.metrics["networks"]
    assert saved["config"]["seeds"] == 2 and "versions" in saved
    if name == "vanishing_gradients":
        best = max(network["final_test_accuracy"]["mean"]
                   for network in saved["networks"].values())
    else:
        best = max(run["test_accuracy"]["mean"] for network in saved["networks"].values()
                   for run in network["runs"])
    assert saved["noise_floor"] == pytest.approx(common.noise_floor(best, 32))


@pytest.mark.parametrize("run_name", ["vanishing_gradients_run", "learning_rates_run",
                                      "paper_figure_run"])
def test_for_a_seed_both_networks_start_from_the_same_kernels_and_batches(run_name, request):
    recorded = request.getfixturevalue(run_name)
    no_bn_0, no_bn_1, bn_0, bn_1 = range(4)
    assert len(recorded.kernels) == len(recorded.labels) == 4
    for no_bn, bn in ((no_bn_0, bn_0), (no_bn_1, bn_1)):
        for kernel, bn_kernel in zip(recorded.kernels[no_bn], recorded.kernels[bn]):
            np.testing.assert_array_equal(kernel, bn_kernel)
        np.testing.assert_array_equal(recorded.labels[no_bn], recorded.labels[bn])
    # ... and another seed starts from other kernels and batches.
    assert not np.array_equal(recorded.kernels[no_bn_0][0], recorded.kernels[no_bn_1][0])
    assert not np.array_equal(recorded.labels[no_bn_0], recorded.labels[no_bn_1])


def test_vanishing_gradients_keeps_every_seeds_norms_and_accuracies(vanishing_gradients_run):
    for network in vanishing_gradients_run.metrics["networks"].values():
        assert network["steps"] == [0, 2, 4] and network["accuracy_steps"] == [2, 4]
        assert len(network["layers"]) == 5
        for layer in network["layers"]:
            per_seed = network["gradient_norms"][layer]
            assert np.shape(per_seed) == (2, 3)  # seeds x records
            assert_spread_of(network["initial_gradient_norms"][layer],
                             [norms[0] for norms in per_seed])
        first = network["gradient_norms"][network["layers"][0]]
        last = network["gradient_norms"][network["layers"][-1]]
        assert_spread_of(network["initial_first_to_last_ratio"],
                         [first_norms[0] / last_norms[0]
                          for first_norms, last_norms in zip(first, last)])
        assert np.shape(network["test_accuracy"]) == (2, 2)
        assert_spread_of(network["final_test_accuracy"],
                         [accuracies[-1] for accuracies in network["test_accuracy"]])
        assert len(network["final_test_loss"]["values"]) == 2


def test_vanishing_gradients_seeds_give_different_initial_gradient_norms(
        vanishing_gradients_run):
    for network in vanishing_gradients_run.metrics["networks"].values():
        for summary in network["initial_gradient_norms"].values():
            seed_0, seed_1 = summary["values"]
            assert seed_0 != pytest.approx(seed_1, rel=1e-3)


def test_learning_rates_keep_every_seeds_accuracy_loss_and_divergence(learning_rates_run):
    for network in learning_rates_run.metrics["networks"].values():
        (run,) = network["runs"]
        assert run["learning_rate"] == 0.1
        assert np.shape(run["train_loss"]) == (2, 2)  # seeds x records
        assert run["diverged"] == [False, False]
        assert len(run["test_accuracy"]["values"]) == len(run["test_loss"]["values"]) == 2
        assert_spread_of(run["test_accuracy"], run["test_accuracy"]["values"])
        assert_spread_of(run["final_train_loss"], [losses[-1] for losses in run["train_loss"]])
        assert network["best_learning_rate"] == 0.1
        assert network["best_mean_test_accuracy"] == run["test_accuracy"]["mean"]


# --- moving_averages -------------------------------------------------------------------

def test_population_statistics_match_numpy(images):
    keras.utils.set_random_seed(0)
    model = moving_averages.build_model(momentum=0.9, debiased=False)
    randomize_bn_state(model)
    before = non_trainable_values(model)
    mean, variance = moving_averages.population_statistics(model, 3, images)
    x = sigmoid(numpy_pre_activations(model, images, 2))
    bn_input = x @ model.get_layer("dense3").kernel.numpy()
    np.testing.assert_allclose(mean, bn_input.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(variance, bn_input.var(axis=0), rtol=1e-4, atol=1e-6)
    assert_state_unchanged(model, before)


def test_statistics_errors_average_over_features():
    records = {"moving_mean": [[0.0, 1.0]], "population_mean": [[1.0, 1.0]],
               "moving_variance": [[4.0, 1.0]], "population_variance": [[4.0, 2.0]]}
    mean_error, variance_error = moving_averages.statistics_errors(records)
    # feature 0: |0 - 1| / 2 = 0.5, feature 1: 0; variance: 0 and |1/2 - 1| = 0.5.
    np.testing.assert_allclose(mean_error, [0.25])
    np.testing.assert_allclose(variance_error, [0.25])


def test_a_batch_of_one_predicts_the_same_class_for_every_image(images):
    keras.utils.set_random_seed(0)
    model = moving_averages.build_model(momentum=0.99, debiased=False)
    randomize_bn_state(model)
    before = non_trainable_values(model)
    labels = np.arange(len(images)) % 10
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    constant_class = np.argmax(twin(images[:1], training=True).numpy())
    # Every BN input equals its batch mean: the output is beta, whatever the image.
    assert moving_averages.batch_statistics_accuracy(model, images, labels, 1) == (
        pytest.approx(np.mean(labels == constant_class)))
    full_batch = moving_averages.accuracy(
        common.call_in_training_mode(model, images).numpy(), labels)
    assert moving_averages.batch_statistics_accuracy(
        model, images, labels, len(images)) == pytest.approx(full_batch)
    assert_state_unchanged(model, before)


def test_debiased_variant_differs_only_in_its_bn_layers():
    keras.utils.set_random_seed(0)
    plain = moving_averages.build_model(momentum=0.99, debiased=False)
    keras.utils.set_random_seed(0)
    debiased = moving_averages.build_model(momentum=0.99, debiased=True)
    for layer in plain.layers:
        if isinstance(layer, keras.layers.Dense):
            np.testing.assert_array_equal(layer.kernel.numpy(),
                                          debiased.get_layer(layer.name).kernel.numpy())
    assert all(debiased.get_layer(f"dense{i}_bn").debiased for i in range(1, 5))


# --- options ---------------------------------------------------------------------------

@pytest.mark.parametrize("module, changes, message", [
    (paper_figure, {"steps": 100, "record_every": 30}, "record_every must divide steps"),
    (paper_figure, {"unit": 100}, "unit must be in 0..99"),
    (paper_figure, {"learning_rate": 0.0}, "learning_rate must be positive"),
    (vanishing_gradients, {"probe_size": 0}, "probe_size must be a positive integer"),
    (vanishing_gradients, {"optimizer": "rmsprop"}, "optimizer must be one of sgd, adam"),
    (vanishing_gradients, {"seeds": 0}, "seeds must be a positive integer"),
    (learning_rates, {"steps": 0}, "steps must be a positive integer"),
    (learning_rates, {"seeds": 0}, "seeds must be a positive integer"),
    (moving_averages, {"layer": 5}, "layer must be in 1..4"),
    (moving_averages, {"layer": 4, "unit": 30}, "unit must be in 0..29 for layer 4"),
    (paper_figure, {"seeds": 0}, "seeds must be a positive integer"),
    (moving_averages, {"seeds": 0}, "seeds must be a positive integer"),
])
def test_bad_options_are_refused_by_name(module, changes, message):
    with pytest.raises(ValueError, match=message):
        module.Config(**changes)


# --- paper_figure and moving_averages: a tiny run with two seeds ------------------------

@pytest.fixture(scope="module")
def paper_figure_run(tiny_mnist, tmp_path_factory):
    return run_recording_fits(
        paper_figure, dict(steps=4, record_every=2, batch_size=16, probe_size=32),
        tiny_mnist, tmp_path_factory.mktemp("paper_figure"))


@pytest.fixture(scope="module")
def moving_averages_run(tiny_mnist, tmp_path_factory):
    return run_recording_fits(
        moving_averages, dict(steps=4, record_every=2, batch_size=16, population_size=32),
        tiny_mnist, tmp_path_factory.mktemp("moving_averages"))


def test_paper_figure_writes_the_figure_and_every_seeds_metrics(paper_figure_run):
    saved = json.loads((paper_figure_run.outdir / "metrics.json").read_text())
    assert (paper_figure_run.outdir / "figure.png").stat().st_size > 10_000
    assert saved["experiment"] == "paper_figure" and saved["percentiles"] == [15, 50, 85]
    assert saved["seeds"] == [0, 1] and saved["test_size"] == 32
    assert saved["networks"] == paper_figure_run.metrics["networks"]
    assert list(saved["networks"]) == ["without_bn", "with_bn"]
    assert saved["config"]["seeds"] == 2 and "versions" in saved
    best = max(network["final_test_accuracy"]["mean"] for network in saved["networks"].values())
    assert saved["noise_floor"] == pytest.approx(common.noise_floor(best, 32))


def test_paper_figure_keeps_every_seeds_curves_and_tabled_numbers(paper_figure_run):
    for network in paper_figure_run.metrics["networks"].values():
        assert network["percentile_steps"] == [0, 2, 4] and network["accuracy_steps"] == [2, 4]
        assert np.shape(network["test_accuracy"]) == (2, 2)  # seeds x records
        final = [accuracies[-1] for accuracies in network["test_accuracy"]]
        assert_spread_of(network["final_test_accuracy"], final)
        # Of the tabled steps (250, ..., 10,000) only the last step is a record here.
        assert list(network["at_steps"]["test_accuracy"]) == ["4"]
        assert_spread_of(network["at_steps"]["test_accuracy"]["4"], final)
        assert list(network["first_step_at_or_above"]) == ["0.9", "0.95"]
        for threshold, summary in network["first_step_at_or_above"].items():
            assert summary["values"] == [
                paper_figure.first_step_at_or_above([2, 4], accuracies, float(threshold))
                for accuracies in network["test_accuracy"]]
        lower, median, upper = (np.array(network[f"percentile_{p}"]) for p in (15, 50, 85))
        assert lower.shape == (2, 3)  # seeds x records, step 0 included
        assert np.all(lower <= median) and np.all(median <= upper)
        assert_spread_of(network["median_range"], np.ptp(median, axis=1))
        assert_spread_of(network["width_15_to_85"]["first"], upper[:, 0] - lower[:, 0])
        assert_spread_of(network["width_15_to_85"]["last"], upper[:, -1] - lower[:, -1])


def test_paper_figure_seeds_give_different_sigmoid_inputs(paper_figure_run):
    for network in paper_figure_run.metrics["networks"].values():
        seed_0, seed_1 = network["percentile_50"]
        assert seed_0[0] != pytest.approx(seed_1[0], rel=1e-3)


def test_paper_figure_first_step_at_or_above_a_threshold():
    steps, accuracies = [250, 500, 750], [0.5, 0.9, 0.95]
    assert paper_figure.first_step_at_or_above(steps, accuracies, 0.9) == 500
    assert paper_figure.first_step_at_or_above(steps, accuracies, 0.96) is None
    everyone = paper_figure.steps_to_reach([500, 750])
    assert everyone["reached"] == 2 and everyone["mean"] == 625 and everyone["values"] == [500, 750]
    # A seed that never got there has no step: no mean, rather than a mean of the others.
    assert paper_figure.steps_to_reach([500, None]) == {
        "mean": None, "sd": None, "values": [500, None], "reached": 1}


def test_spread_at_steps_takes_the_recorded_ones_of_the_tabled_steps():
    per_seed = [[0.1, 0.2, 0.3], [0.3, 0.4, 0.5]]
    at_steps = common.spread_at_steps([0, 250, 500], per_seed, (250, 1000, 500))
    assert list(at_steps) == ["250", "500"]
    assert_spread_of(at_steps["500"], [0.3, 0.5])


def test_moving_averages_writes_the_figure_and_every_seeds_metrics(moving_averages_run):
    saved = json.loads((moving_averages_run.outdir / "metrics.json").read_text())
    assert (moving_averages_run.outdir / "figure.png").stat().st_size > 10_000
    assert saved["experiment"] == "moving_averages" and (saved["layer"], saved["unit"]) == (4, 0)
    assert saved["seeds"] == [0, 1] and saved["test_size"] == 32
    assert saved["variants"] == moving_averages_run.metrics["variants"]
    assert saved["inference_batch_size"] == moving_averages_run.metrics["inference_batch_size"]
    assert list(saved["variants"]) == ["momentum_0.99", "momentum_0.99_debiased", "momentum_0.9"]
    assert saved["config"]["seeds"] == 2 and "versions" in saved
    best = max(variant["final_test_accuracy"]["mean"] for variant in saved["variants"].values())
    assert saved["noise_floor"] == pytest.approx(common.noise_floor(best, 32))


def test_moving_averages_runs_of_a_seed_start_alike_and_train_identical_weights(
        moving_averages_run):
    recorded = moving_averages_run
    assert len(recorded.kernels) == len(recorded.labels) == 6  # variant by variant, seed by seed
    for seed in (0, 1):
        first, *others = range(seed, 6, 2)
        for other in others:
            for kernel, other_kernel in zip(recorded.kernels[first], recorded.kernels[other]):
                np.testing.assert_array_equal(kernel, other_kernel)
            np.testing.assert_array_equal(recorded.labels[first], recorded.labels[other])
    assert not np.array_equal(recorded.kernels[0][0], recorded.kernels[1][0])
    assert not np.array_equal(recorded.labels[0], recorded.labels[1])
    # BN trains on batch statistics: momentum and debiasing change only the averages, so
    # the runs of a seed train identical weights (and seeds differ).
    variants = recorded.metrics["variants"]
    losses = variants["momentum_0.99"]["final_train_loss"]
    assert len(losses) == 2 and losses[0] != losses[1]
    batch_accuracy = variants["momentum_0.99"]["batch_statistics_test_accuracy"]
    for variant in variants.values():
        assert variant["final_train_loss"] == losses
        assert variant["batch_statistics_test_accuracy"] == batch_accuracy
        assert variant["unit_population_mean"] == variants["momentum_0.99"]["unit_population_mean"]


def test_moving_averages_keeps_every_seeds_curves_and_tabled_numbers(moving_averages_run):
    metrics = moving_averages_run.metrics
    for variant in metrics["variants"].values():
        assert variant["steps"] == [0, 2, 4] and variant["accuracy_steps"] == [2, 4]
        for key in ("batch_statistics_test_accuracy", "mean_error", "variance_error",
                    "unit_moving_mean", "unit_population_variance"):
            assert np.shape(variant[key]) == (2, 3), key  # seeds x records, step 0 included
        moving_accuracy = variant["moving_statistics_test_accuracy"]
        assert np.shape(moving_accuracy) == (2, 2)
        assert_spread_of(variant["final_test_accuracy"], [curve[-1] for curve in moving_accuracy])
        for key, curves in (("moving_statistics_test_accuracy", moving_accuracy),
                            ("mean_error", variant["mean_error"]),
                            ("variance_error", variant["variance_error"])):
            assert list(variant["at_steps"][key]) == ["4"]
            assert_spread_of(variant["at_steps"][key]["4"], [curve[-1] for curve in curves])
        assert [means[0] for means in variant["unit_moving_mean"]] == [0.0, 0.0]  # initial
    # Four updates: momentum 0.9 has moved 1 - 0.9**4 = 34% of the way, 0.99 only 4%.
    for fast, slow in zip(metrics["variants"]["momentum_0.9"]["mean_error"],
                          metrics["variants"]["momentum_0.99"]["mean_error"]):
        assert fast[-1] < slow[-1]
    inference = metrics["inference_batch_size"]
    assert inference["batch_sizes"] == [1, 4, 16]
    assert list(inference["batch_statistics_test_accuracy"]) == ["1", "4", "16"]
    for summary in inference["batch_statistics_test_accuracy"].values():
        assert_spread_of(summary, summary["values"])
        assert len(summary["values"]) == 2
    assert (inference["moving_statistics_test_accuracy"]
            == metrics["variants"]["momentum_0.99"]["final_test_accuracy"])


def test_plot_mean_and_spread_keeps_a_log_band_above_zero():
    from matplotlib.figure import Figure

    per_seed = [[0.01, 1.0], [1.0, 1.1], [0.02, 0.9]]  # mean - sd < 0 at the first step
    linear, logarithmic = Figure().subplots(1, 2)
    logarithmic.set_yscale("log")
    for axes in (linear, logarithmic):
        common.plot_mean_and_spread(axes, [0, 1], per_seed, "curve")
    np.testing.assert_allclose(linear.lines[0].get_ydata(), np.mean(per_seed, axis=0))
    low = linear.collections[0].get_paths()[0].vertices[:, 1].min()
    assert low == pytest.approx(np.mean(per_seed, axis=0)[0] - np.std(per_seed, axis=0, ddof=1)[0])
    assert low < 0
    # On the log axis the band stops at the lowest seed instead.
    assert logarithmic.collections[0].get_paths()[0].vertices[:, 1].min() == pytest.approx(0.01)

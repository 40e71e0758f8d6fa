"""Experiments paper_figure, vanishing_gradients, learning_rates and moving_averages:
their hand-made measurements against NumPy, their options, and a tiny run of each."""

import json

import keras
import numpy as np
import pytest

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
    (learning_rates, {"steps": 0}, "steps must be a positive integer"),
    (moving_averages, {"layer": 5}, "layer must be in 1..4"),
    (moving_averages, {"layer": 4, "unit": 30}, "unit must be in 0..29 for layer 4"),
])
def test_bad_options_are_refused_by_name(module, changes, message):
    with pytest.raises(ValueError, match=message):
        module.Config(**changes)


# --- a tiny run of each experiment, once ----------------------------------------------

TINY_RUNS = {
    "paper_figure": (paper_figure, dict(steps=4, record_every=2, batch_size=16, probe_size=32)),
    "vanishing_gradients": (vanishing_gradients,
                            dict(steps=4, record_every=2, batch_size=16, probe_size=32)),
    "learning_rates": (learning_rates,
                       dict(learning_rates="0.1", steps=2, record_every=1, batch_size=16)),
    "moving_averages": (moving_averages,
                        dict(steps=4, record_every=2, batch_size=16, population_size=32)),
}
EXPECTED_KEYS = {
    "paper_figure": ("networks", "percentiles"),
    "vanishing_gradients": ("networks",),
    "learning_rates": ("networks", "learning_rates", "optimizer"),
    "moving_averages": ("variants", "inference_batch_size"),
}


@pytest.fixture(scope="module", params=list(TINY_RUNS))
def tiny_run(request, tiny_mnist, tmp_path_factory):
    module, options = TINY_RUNS[request.param]
    outdir = tmp_path_factory.mktemp(request.param)
    config = module.Config(**options, outdir=str(outdir), verbose=0)
    return request.param, outdir, module.run(config, arrays=tiny_mnist)


def test_tiny_run_writes_the_figure_and_the_metrics(tiny_run):
    name, outdir, metrics = tiny_run
    assert (outdir / "figure.png").stat().st_size > 10_000
    saved = json.loads((outdir / "metrics.json").read_text())
    for key in (*EXPECTED_KEYS[name], "experiment", "config", "versions"):
        assert key in saved
    assert saved["experiment"] == metrics["experiment"] == name
    assert saved["config"]["outdir"] == str(outdir)


def test_tiny_runs_compare_networks_that_saw_the_same_batches(tiny_run):
    name, _, metrics = tiny_run
    if name == "paper_figure":
        networks = metrics["networks"]
        assert list(networks) == ["without_bn", "with_bn"]
        for network in networks.values():
            assert network["percentile_steps"] == [0, 2, 4]
            assert network["accuracy_steps"] == [2, 4]
            lower, median, upper = (np.array(network[f"percentile_{p}"]) for p in (15, 50, 85))
            assert np.all(lower <= median) and np.all(median <= upper)
    elif name == "vanishing_gradients":
        for network in metrics["networks"].values():
            assert network["steps"] == [0, 2, 4]
            assert len(network["layers"]) == 5
            assert all(len(norms) == 3 for norms in network["gradient_norms"].values())
    elif name == "learning_rates":
        for network in metrics["networks"].values():
            (run,) = network["runs"]
            assert run["learning_rate"] == 0.1 and len(run["train_loss"]) == 2
    else:
        variants = metrics["variants"]
        # BN trains on batch statistics: momentum and debiasing change only the averages,
        # so runs with the same weights and batches train identically.
        losses = {name: variant["final_train_loss"] for name, variant in variants.items()}
        assert len(set(losses.values())) == 1, losses
        batch_accuracy = variants["momentum_0.99"]["batch_statistics_test_accuracy"]
        for variant in variants.values():
            assert variant["batch_statistics_test_accuracy"] == batch_accuracy
        assert variants["momentum_0.99"]["unit_moving_mean"][0] == 0.0  # the initial value
        # Four updates: momentum 0.9 has moved 1 - 0.9**4 = 34% of the way, 0.99 only 4%.
        assert (variants["momentum_0.9"]["mean_error"][-1]
                < variants["momentum_0.99"]["mean_error"][-1])
        assert list(metrics["inference_batch_size"]["batch_statistics_test_accuracy"]) == [
            "1", "4", "16"]

"""Experiment lrn (LRN vs BN vs both vs neither, conv net), on tiny MNIST-shaped data."""

import importlib
import json

import keras
import numpy as np
import pytest

from tfbn import cli
from tfbn.experiments import lrn

LESSON = importlib.import_module(lrn.LESSON)


def alexnet_lrn(activations, k=2.0, n=5, alpha=1e-4, beta=0.75):
    """Krizhevsky et al. 2012, section 3.3, written as the paper writes it: a loop over the
    channels i, each divided by k + alpha times its neighbours' sum of squares, to the beta."""
    channels = activations.shape[-1]
    normalized = np.empty_like(activations, dtype=np.float64)
    for i in range(channels):
        neighbours = range(max(0, i - n // 2), min(channels - 1, i + n // 2) + 1)
        squares = sum(activations[..., j].astype(np.float64) ** 2 for j in neighbours)
        normalized[..., i] = activations[..., i] / (k + alpha * squares) ** beta
    return normalized


def test_lrn_runs_its_variants_and_writes_its_results(tiny_mnist, tmp_path):
    config = lrn.Config(epochs=1, train_size=64, batch_size=16, seeds=1, seed=3,
                        variants="lrn_bn,plain", outdir=str(tmp_path))
    metrics = lrn.run(config, arrays=tiny_mnist)
    variants = {variant["name"]: variant for variant in metrics["variants"]}
    assert list(variants) == ["plain", "lrn_bn"] and metrics["seeds"] == [3]
    for variant in variants.values():
        assert len(variant["test_accuracy"]["values"]) == 1
        assert variant["seconds_per_epoch"]["mean"] > 0
        assert variant["cpu_seconds_per_epoch"]["mean"] > 0
    # BN's beta replaces the bias one for one; LRN learns nothing.
    parameters = {name: variant["trainable_parameters"] for name, variant in variants.items()}
    assert parameters["plain"] == parameters["lrn_bn"]
    assert variants["plain"]["lrn_divisor_excess"] == {}
    excess = variants["lrn_bn"]["lrn_divisor_excess"]
    assert list(excess) == ["conv1_lrn", "conv2_lrn"]
    for statistics in excess.values():
        assert 0 <= statistics["mean"]["values"][0] <= statistics["p99"]["values"][0]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["experiment"] == "lrn" and saved["config"]["variants"] == "lrn_bn,plain"
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_the_lrn_layer_is_alexnets_formula_and_survives_saving(tmp_path):
    # Activations of tens, so that alpha * S is comparable with k and the divisor varies.
    activations = 30 * np.random.default_rng(0).random((3, 4, 5, 11)).astype("float32")
    expected = alexnet_lrn(activations)
    divisor = activations / expected
    assert np.ptp(divisor) > 0.1
    layer = LESSON.LocalResponseNormalization()
    output = keras.ops.convert_to_numpy(layer(activations))
    np.testing.assert_allclose(output, expected, rtol=1e-5)
    # The experiment's measurement of the divisor agrees with the formula too.
    np.testing.assert_allclose(lrn.lrn_divisor(activations, layer), divisor, rtol=1e-6)

    inputs = keras.Input(shape=(4, 5, 11))
    model = keras.Model(inputs, LESSON.LocalResponseNormalization(alpha=3e-4)(inputs))
    model.save(tmp_path / "lrn.keras")
    reloaded = keras.saving.load_model(tmp_path / "lrn.keras")
    assert reloaded.layers[-1].get_config()["alpha"] == 3e-4
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(activations)),
                               keras.ops.convert_to_numpy(model(activations)), rtol=1e-6)


def test_the_variants_share_their_kernels_and_lrn_follows_the_first_two_relus():
    models = {}
    for variant in lrn.VARIANTS:
        keras.utils.set_random_seed(0)
        models[variant.name] = LESSON.build_model(variant.lrn, variant.bn)
    for name in ("conv1", "conv2", "conv3", "dense", "softmax"):
        kernels = [model.get_layer(name).kernel.numpy() for model in models.values()]
        for kernel in kernels[1:]:
            np.testing.assert_array_equal(kernel, kernels[0], err_msg=name)
    assert [layer.name for layer in models["lrn_bn"].layers] == [
        "image", "conv1", "conv1_bn", "conv1_relu", "conv1_lrn",
        "conv2", "conv2_bn", "conv2_relu", "conv2_lrn", "conv3", "conv3_bn", "conv3_relu",
        "flatten", "dense", "dense_bn", "dense_relu", "dense_dropout", "softmax"]
    assert [layer.name for layer in models["lrn"].layers][1:5] == [
        "conv1", "conv1_relu", "conv1_lrn", "conv2"]
    assert models["plain"].get_layer("conv1").use_bias
    assert not models["bn"].get_layer("conv1").use_bias


def test_lrn_options_reach_the_config_and_bad_ones_are_refused():
    config = cli.parse_experiment_options(
        "lrn", lrn.Config(), ["--variants", "bn,lrn", "--bn-momentum", "0.99", "--seeds", "5"])
    assert [variant.name for variant in config.chosen_variants()] == ["lrn", "bn"]
    assert (config.bn_momentum, config.seeds) == (0.99, 5)
    with pytest.raises(ValueError, match="variants must name some of plain, lrn, bn, lrn_bn"):
        lrn.Config(variants="alexnet")
    with pytest.raises(ValueError, match="bn_momentum"):
        lrn.Config(bn_momentum=1.0)
    with pytest.raises(SystemExit):
        cli.parse_experiment_options("lrn", lrn.Config(), ["--learning-rate", "0"])

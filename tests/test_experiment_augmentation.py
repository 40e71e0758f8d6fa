"""Experiment augmentation (image distortion with and without BN), on tiny MNIST-shaped data."""

import importlib
import json

import keras
import numpy as np
import pytest

from tfbn import BatchNorm, cli
from tfbn.experiments import augmentation

lesson = importlib.import_module(augmentation.LESSON)


def digits(count=8, seed=0):
    """Images in [0, 1] with a bright bar off centre, so that any shift or turn moves it."""
    images = np.random.default_rng(seed).random((count, 28, 28, 1)).astype("float32") * 0.2
    images[:, 6:10, 4:20] = 1.0
    return images


def test_augmentation_runs_both_networks_at_every_strength(tiny_mnist, tmp_path):
    config = augmentation.Config(epochs=1, train_size=64, batch_size=16, seeds=1, seed=2,
                                 strengths="strong, none", outdir=str(tmp_path))
    metrics = augmentation.run(config, arrays=tiny_mnist)
    assert [variant["name"] for variant in metrics["variants"]] == [
        "BN, none", "BN, strong", "no BN, none", "no BN, strong"]
    assert metrics["seeds"] == [2] and metrics["test_size"] == 32
    accuracy = {variant["name"]: variant["test_accuracy"]["values"]
                for variant in metrics["variants"]}
    assert all(len(values) == 1 for values in accuracy.values())
    gains = {gain["network"]: gain["gain"]["values"][0] for gain in metrics["gains"]}
    assert gains["bn"] == pytest.approx(accuracy["BN, strong"][0] - accuracy["BN, none"][0])
    assert gains["no_bn"] == pytest.approx(
        accuracy["no BN, strong"][0] - accuracy["no BN, none"][0])
    [difference] = metrics["bn_gain_minus_no_bn_gain"]
    assert difference["strength"] == "strong"
    assert difference["difference"]["values"][0] == pytest.approx(gains["bn"] - gains["no_bn"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["experiment"] == "augmentation" and saved["config"]["strengths"] == "strong, none"
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_distortion_acts_in_training_only():
    images = digits()
    distortion = lesson.distortion(shift_pixels=4, rotation_degrees=20, seed=0)
    distorted = keras.ops.convert_to_numpy(distortion(images, training=True))
    assert distorted.shape == images.shape
    changed = np.abs(distorted - images).reshape(len(images), -1).max(axis=1)
    assert np.all(changed > 0.1), "every image of the batch is moved"
    assert np.array_equal(keras.ops.convert_to_numpy(distortion(images, training=False)), images)
    # What comes in from outside the image is black background, not mirrored strokes.
    white = keras.ops.convert_to_numpy(distortion(np.ones_like(images), training=True))
    assert white.min() < 0.5


def test_a_seed_draws_the_same_distortions_and_different_seeds_differ():
    images = digits()

    def distorted(seed):
        layer = lesson.distortion(shift_pixels=4, rotation_degrees=20, seed=seed)
        return keras.ops.convert_to_numpy(layer(images, training=True))

    assert np.array_equal(distorted(3), distorted(3))
    assert not np.allclose(distorted(3), distorted(4))


@pytest.mark.parametrize("bn", [True, False])
def test_at_inference_the_distorted_model_is_the_undistorted_one(bn):
    """The same seed gives the same kernels with and without the distortion layers (they
    have their own seeds), and at inference those layers are the identity."""
    images = digits(16)
    keras.utils.set_random_seed(5)
    plain = lesson.build_model(bn, 0, 0, seed=5)
    keras.utils.set_random_seed(5)
    distorted = lesson.build_model(bn, 4, 20, seed=5)
    assert "distortion" not in [layer.name for layer in plain.layers]
    assert distorted.get_layer("distortion") is not None
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(plain(images, training=False)),
                                  keras.ops.convert_to_numpy(distorted(images, training=False)))


def test_bn_and_no_bn_networks_start_from_the_same_kernels():
    keras.utils.set_random_seed(1)
    with_bn = lesson.build_model(True, 2, 10, seed=1)
    keras.utils.set_random_seed(1)
    without_bn = lesson.build_model(False, 2, 10, seed=1)
    for name in ("conv1", "conv2", "conv3", "dense", "softmax"):
        np.testing.assert_array_equal(with_bn.get_layer(name).kernel.numpy(),
                                      without_bn.get_layer(name).kernel.numpy())
    assert sum(isinstance(layer, BatchNorm) for layer in with_bn.layers) == 4
    assert not any(isinstance(layer, BatchNorm) for layer in without_bn.layers)


def test_augmentation_options_reach_the_config():
    config = cli.parse_experiment_options(
        "augmentation", augmentation.Config(),
        ["--strengths", "none,light,strong", "--seeds", "5", "--epochs", "2"])
    assert (config.seeds, config.epochs) == (5, 2)
    assert [s.name for s in config.chosen_strengths()] == ["none", "light", "strong"]
    with pytest.raises(ValueError, match="strengths must name some of none, light, strong"):
        augmentation.Config(strengths="none,wild")
    with pytest.raises(SystemExit):
        cli.parse_experiment_options("augmentation", augmentation.Config(), ["--seeds", "0"])

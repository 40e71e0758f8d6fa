"""The experiments of issue 13 (placement, ...), on tiny MNIST-shaped data."""

import importlib
import json

import keras
import numpy as np
import pytest

from tfbn import cli
from tfbn.experiments import common, per_channel, placement


def test_spread_and_noise_floor():
    summary = common.spread([0.98, 0.99, 1.0])
    assert summary["mean"] == pytest.approx(0.99) and summary["sd"] == pytest.approx(0.01)
    assert common.spread([0.5])["sd"] == 0.0
    assert common.noise_floor(0.995, 10_000) == pytest.approx(0.000705, rel=1e-3)
    assert common.percent_spread(summary) == "99.00 ± 1.00%"


def test_placement_runs_every_variant_for_every_seed(tiny_mnist, tmp_path):
    config = placement.Config(epochs=1, train_size=64, batch_size=16, seeds=1, seed=3,
                              outdir=str(tmp_path))
    metrics = placement.run(config, arrays=tiny_mnist)
    assert [variant["name"] for variant in metrics["variants"][:4]] == [
        "BN -> relu, no bias", "BN -> relu, bias", "relu -> BN, no bias", "relu -> BN, bias"]
    assert len(metrics["variants"]) == 8 and metrics["seeds"] == [3]
    for variant in metrics["variants"]:
        assert len(variant["test_accuracy"]["values"]) == 1
    parameters = {variant["name"]: variant["parameters"] for variant in metrics["variants"]}
    assert parameters["BN -> relu, bias"] - parameters["BN -> relu, no bias"] == 200 + 100 + 60 + 30
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["experiment"] == "placement" and saved["config"]["seeds"] == 1
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_before_bn_the_bias_is_cancelled_after_it_is_not():
    lesson = importlib.import_module(placement.LESSON)
    images = np.random.default_rng(0).random((32, 784)).astype("float32")
    for placement_name, cancelled in (("before", True), ("after", False)):
        keras.utils.set_random_seed(0)
        model = lesson.build_model("relu", placement_name, use_bias=True)
        before = keras.ops.convert_to_numpy(model(images, training=True))
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dense) and layer.name != "softmax":
                layer.bias.assign(np.full(layer.bias.shape, 0.5, "float32"))
        after = keras.ops.convert_to_numpy(model(images, training=True))
        assert np.allclose(before, after, atol=1e-5) == cancelled, placement_name


def test_placement_options_reach_the_config():
    config = cli.parse_experiment_options("placement", placement.Config(),
                                          ["--seeds", "5", "--seed", "7", "--epochs", "2"])
    assert (config.seeds, config.seed, config.epochs) == (5, 7, 2)
    with pytest.raises(SystemExit):
        cli.parse_experiment_options("placement", placement.Config(), ["--seeds", "0"])


def test_per_channel_runs_both_networks_and_counts_their_statistics(tiny_mnist, tmp_path):
    config = per_channel.Config(epochs=1, train_size=64, batch_size=16, seeds=1,
                                noise_batches=4, outdir=str(tmp_path))
    metrics = per_channel.run(config, arrays=tiny_mnist)
    counts = {variant["statistics"]: variant["statistics_count"]
              for variant in metrics["variants"]}
    # Means and variances: 24 + 48 + 64 channels and 200 units, or every activation.
    assert counts == {"per_channel": 2 * (24 + 48 + 64 + 200),
                      "per_activation": 2 * (28 * 28 * 24 + 14 * 14 * 48 + 7 * 7 * 64 + 200)}
    noise = metrics["variants"][1]["noise"]["conv1_bn"]
    assert noise["features"] == 28 * 28 * 24 and noise["values_per_batch_statistic"] == 16
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_the_noise_of_a_batch_mean_is_one_over_root_n_per_activation_and_less_per_channel():
    lesson = importlib.import_module(per_channel.LESSON)
    images = np.random.default_rng(0).random((40 * 16, 28, 28, 1)).astype("float32")
    noise = {}
    for statistics in per_channel.VARIANTS:
        keras.utils.set_random_seed(0)
        model = lesson.build_model(statistics)
        noise[statistics] = per_channel.statistics_noise(model, images, batch_size=16)
    # Independent images: a batch mean of 16 values wanders by 1/4 of the feature's sd.
    assert 0.2 < noise["per_activation"]["conv1_bn"]["mean_noise"] < 0.3
    # Over N, H and W it averages 16 x 784 values, nearly independent for random pixels.
    assert noise["per_channel"]["conv1_bn"]["mean_noise"] < 0.05

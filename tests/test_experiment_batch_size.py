"""The batch_size experiment (BN, renorm, ghost batches, group and layer norm at small
batches), on tiny MNIST-shaped data."""

import importlib
import json

import keras
import numpy as np
import pytest

from tfbn import cli
from tfbn.experiments import batch_size

lesson = importlib.import_module(batch_size.LESSON)


def test_batch_size_runs_every_normalizer_at_its_batch_sizes(tiny_mnist, tmp_path):
    config = batch_size.Config(epochs=1, train_size=64, batch_sizes="16,4",
                               normalizers="none,ghost_batch_norm,batch_norm",
                               ghost_batch_size=4, moving_average_images=100, seeds=1,
                               seed=3, outdir=str(tmp_path))
    metrics = batch_size.run(config, arrays=tiny_mnist)
    variants = {variant["normalizer"]: variant for variant in metrics["variants"]}
    assert list(variants) == ["batch_norm", "ghost_batch_norm", "none"]
    assert metrics["batch_sizes"] == [4, 16] and metrics["seeds"] == [3]
    # Ghost batches of 4 exist only in batches larger than 4.
    assert [run["batch_size"] for run in variants["ghost_batch_norm"]["runs"]] == [16]
    at_4, at_16 = variants["batch_norm"]["runs"]
    assert (at_4["steps"], at_16["steps"]) == (16, 4)
    assert at_4["images_seen"] == at_16["images_seen"] == 64
    assert at_4["momentum"] == pytest.approx(0.96) and at_16["momentum"] == pytest.approx(0.84)
    assert at_16["learning_rate"] == pytest.approx(2 * at_4["learning_rate"])
    assert len(at_4["test_accuracy"]["values"]) == 1
    assert at_4["difference_to_none"]["values"][0] == pytest.approx(
        at_4["test_accuracy"]["values"][0]
        - variants["none"]["runs"][0]["test_accuracy"]["values"][0])
    assert all("difference_to_none" not in run for run in variants["none"]["runs"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["experiment"] == "batch_size" and saved["config"]["ghost_batch_size"] == 4
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_at_batch_two_a_dense_bn_layer_only_tells_which_image_is_larger():
    """Two values normalized are -1 and +1 (but for epsilon), whatever they were."""
    keras.utils.set_random_seed(0)
    model = lesson.build_model("batch_norm")
    bn = model.get_layer("dense_norm")
    bn.beta.assign(np.linspace(-0.5, 0.5, bn.beta.shape[0]).astype("float32"))
    probe = keras.Model(model.input, [model.get_layer("dense").output, bn.output])
    images = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    before_bn, after_bn = (keras.ops.convert_to_numpy(output)
                           for output in probe(images, training=True))
    half_difference = np.abs(before_bn[0] - before_bn[1]) / 2
    assert np.median(half_difference) > 0.05  # the two images do differ
    centred = after_bn - keras.ops.convert_to_numpy(bn.beta)
    np.testing.assert_allclose(centred[0], -centred[1], atol=1e-5)
    np.testing.assert_allclose(np.abs(centred[0]),
                               half_difference / np.sqrt(half_difference ** 2 + bn.epsilon),
                               atol=1e-4)


def test_group_and_layer_norm_ignore_the_rest_of_the_batch_bn_does_not():
    images = np.random.default_rng(1).random((3, 28, 28, 1)).astype("float32")
    conv_kernels = []
    for normalizer, independent in (("group_norm", True), ("layer_norm", True),
                                    ("batch_norm", False)):
        keras.utils.set_random_seed(0)
        model = lesson.build_model(normalizer)
        conv_kernels.append(keras.ops.convert_to_numpy(model.get_layer("conv1").kernel))
        with_second = keras.ops.convert_to_numpy(model(images[[0, 1]], training=True))
        with_third = keras.ops.convert_to_numpy(model(images[[0, 2]], training=True))
        assert np.allclose(with_second[0], with_third[0], atol=1e-5) == independent, normalizer
    # A seed gives every normalizer the same kernels.
    assert all(np.array_equal(kernel, conv_kernels[0]) for kernel in conv_kernels)


def test_renorm_trains_with_the_statistics_inference_uses():
    """After a warm-up on batches of 2, renorm's training output is close to its inference
    output; plain BN's is not (its training output is +-1 per feature)."""
    rng = np.random.default_rng(2)

    def batches(count):
        return [(1.0 + 2.0 * rng.standard_normal((2, 16))).astype("float32")
                for _ in range(count)]

    gaps = {}
    for normalizer in ("batch_norm", "renorm"):
        layer = lesson.normalization(normalizer, momentum=0.9, name=normalizer,
                                     feature_map=False)
        for batch in batches(300):
            layer(batch, training=True)
        gaps[normalizer] = np.mean([
            np.abs(keras.ops.convert_to_numpy(layer(batch, training=True) - layer(batch)))
            for batch in batches(50)])
    assert gaps["renorm"] < 0.4 * gaps["batch_norm"], gaps


def test_learning_rate_and_momentum_scale_with_the_batch_size():
    assert lesson.scaled_learning_rate(0.002, 32, "sqrt") == pytest.approx(0.002)
    assert lesson.scaled_learning_rate(0.002, 2, "sqrt") == pytest.approx(0.0005)
    assert lesson.scaled_learning_rate(0.002, 2, "constant") == 0.002
    assert lesson.bn_momentum(2, 1000) == pytest.approx(0.998)


def test_batch_size_options_reach_the_config():
    config = cli.parse_experiment_options(
        "batch_size", batch_size.Config(),
        ["--batch-sizes", "2,4", "--normalizers", "renorm,none", "--seeds", "2",
         "--learning-rate-scaling", "constant"])
    assert (config.batch_sizes, config.normalizers, config.seeds) == ("2,4", "renorm,none", 2)
    assert config.learning_rate_scaling == "constant"
    for bad in (["--batch-sizes", "2,x"], ["--batch-sizes", "4,4"],
                ["--normalizers", "instance_norm"], ["--moving-average-images", "128"],
                ["--normalizers", "ghost_batch_norm", "--batch-sizes", "2,8"],
                ["--train-size", "100"], ["--learning-rate-scaling", "linear"]):
        with pytest.raises(SystemExit):
            cli.parse_experiment_options("batch_size", batch_size.Config(), bad)
    with pytest.raises(ValueError, match="ghost_batch_norm needs a batch size"):
        batch_size.Config(normalizers="ghost_batch_norm", batch_sizes="2,16")

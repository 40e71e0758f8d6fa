"""The fine_tuning experiment, on tiny MNIST-shaped data."""

import importlib
import json

import keras
import numpy as np
import pytest

from tfbn import cli, data
from tfbn.experiments import fine_tuning

LESSON = importlib.import_module(fine_tuning.LESSON)
BN_LAYERS = ("conv1_bn", "conv2_bn", "conv3_bn", "dense_bn")
KERNEL_LAYERS = ("conv1", "conv2", "conv3", "dense")
# variant: (moving statistics change, beta changes, body kernels change, BN normalizes
# with batch statistics in training)
WHAT_MOVES = {
    "frozen": (False, False, False, False),
    "bn_training": (True, True, False, True),
    "keras2": (True, False, False, True),
    "keras2_fixed_stats": (False, False, False, True),
    "everything": (True, True, True, True),
}


def body_state(model) -> dict:
    body = model.get_layer("body")
    state = {}
    for name in BN_LAYERS:
        layer = body.get_layer(name)
        for weight in ("moving_mean", "moving_variance", "beta"):
            state[name, weight] = keras.ops.convert_to_numpy(getattr(layer, weight)).copy()
    for name in KERNEL_LAYERS:
        state[name, "kernel"] = keras.ops.convert_to_numpy(body.get_layer(name).kernel).copy()
    return state


def changed(before: dict, after: dict, weights: tuple[str, ...]) -> bool:
    return any(not np.array_equal(before[key], after[key]) for key in before
               if key[1] in weights)


def test_each_variant_moves_what_it_says_in_fit(tiny_mnist):
    (x_train, y_train), _ = tiny_mnist
    images, labels = LESSON.select_digits(x_train, y_train, fine_tuning.FINE_TUNING_DIGITS)
    assert set(labels) <= set(range(5)) and len(images) >= 20
    images = data.normalize_images(images[:20])
    keras.utils.set_random_seed(0)
    pretrained = LESSON.build_model("everything")
    # Pretrained-looking statistics, unlike the data's: a training-mode call would move them.
    # (A negative mean keeps the ReLUs alive in inference mode, so that the head learns.)
    for layer in pretrained.get_layer("body").layers:
        if layer.name in BN_LAYERS:
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, -0.3, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, "float32"))
            layer.beta.assign(np.full(layer.beta.shape, 0.1, "float32"))
    body_weights = pretrained.get_layer("body").get_weights()
    for variant, (statistics, beta, kernels, batch_statistics) in WHAT_MOVES.items():
        keras.utils.set_random_seed(1)
        model = LESSON.build_model(variant, body_weights)
        model.compile(optimizer=LESSON.make_optimizer(0.01),
                      loss="sparse_categorical_crossentropy")
        before = body_state(model)
        head_before = keras.ops.convert_to_numpy(model.get_layer("head").kernel).copy()
        model.fit(images, labels[:20], batch_size=10, epochs=1, verbose=0)
        after = body_state(model)
        assert changed(before, after, ("moving_mean", "moving_variance")) == statistics, variant
        assert changed(before, after, ("beta",)) == beta, variant
        assert changed(before, after, ("kernel",)) == kernels, variant
        assert not np.array_equal(head_before,
                                  keras.ops.convert_to_numpy(model.get_layer("head").kernel))
        # In training mode a frozen (Keras 3) BN layer normalizes with its moving statistics,
        # the others with the batch's.
        layer = model.get_layer("body").get_layer("conv3_bn")
        inputs = np.random.default_rng(0).normal(3.0, 2.0, (8, 7, 7, 64)).astype("float32")
        in_training = keras.ops.convert_to_numpy(layer(inputs, training=True))
        in_inference = keras.ops.convert_to_numpy(layer(inputs, training=False))
        assert (not np.allclose(in_training, in_inference, atol=1e-4)) == batch_statistics, \
            variant


def test_fine_tuning_runs_and_reports_what_moved(tiny_mnist, tmp_path):
    config = fine_tuning.Config(pretrain_size=24, pretrain_epochs=1, batch_size=12,
                                fine_tune_size=20, fine_tune_epochs=1, fine_tune_batch_size=10,
                                variants="keras2,frozen", bn="keras", seeds=1, seed=3,
                                outdir=str(tmp_path))
    metrics = fine_tuning.run(config, arrays=tiny_mnist)
    variants = {variant["name"]: variant for variant in metrics["variants"]}
    assert list(variants) == ["frozen", "keras2"] and metrics["seeds"] == [3]
    # Keras's own layer freezes as tfbn.BatchNorm does.
    assert variants["frozen"]["statistics_changed"] == [False]
    assert variants["frozen"]["moving_mean_shift"]["values"] == [0.0]
    assert variants["keras2"]["statistics_changed"] == [True]
    assert variants["keras2"]["moving_mean_shift"]["mean"] > 0
    assert variants["keras2"]["beta_changed"] == variants["frozen"]["beta_changed"] == [False]
    for variant in variants.values():
        assert len(variant["test_accuracy"]["values"]) == 1
        assert 0 <= variant["fit_accuracy"]["mean"] <= 1
    _, (_, y_test) = tiny_mnist
    assert metrics["test_size"] == int(np.sum(y_test >= 5))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["experiment"] == "fine_tuning" and saved["config"]["variants"] == "keras2,frozen"
    assert len(saved["pretrained_accuracy"]["values"]) == 1
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_bn_changes_are_in_standard_deviations_of_the_old_statistics():
    before = {"bn": {"moving_mean": np.array([0.0, 1.0]), "moving_variance": np.array([4.0, 1.0]),
                     "beta": np.array([0.0, 0.0])}}
    after = {"bn": {"moving_mean": np.array([1.0, 1.0]), "moving_variance": np.array([4.0, 1.0]),
                    "beta": np.array([0.0, -0.25])}}
    changes = fine_tuning.bn_changes(before, after, epsilon=0.0)
    assert changes == {"moving_mean_shift": 0.5, "statistics_changed": True,
                       "beta_change": 0.25, "beta_changed": True}
    assert fine_tuning.bn_changes(before, before)["statistics_changed"] is False


def test_fine_tuning_options_reach_the_config_and_bad_ones_fail(tiny_mnist):
    config = cli.parse_experiment_options(
        "fine_tuning", fine_tuning.Config(),
        ["--fine-tune-size", "500", "--variants", "frozen,everything", "--seeds", "2"])
    assert (config.fine_tune_size, config.seeds) == (500, 2)
    assert config.chosen_variants() == ("frozen", "everything")
    with pytest.raises(SystemExit):
        cli.parse_experiment_options("fine_tuning", fine_tuning.Config(),
                                     ["--fine-tune-batch-size", "0"])
    with pytest.raises(ValueError, match="variants must name some of"):
        fine_tuning.Config(variants="frozen,trainable")
    with pytest.raises(ValueError, match="bn_momentum"):
        fine_tuning.Config(bn_momentum=1.0)
    with pytest.raises(ValueError, match="fine_tune_size must be at most"):
        fine_tuning.run(fine_tuning.Config(pretrain_size=10, fine_tune_size=1000),
                        arrays=tiny_mnist)

"""The noisy BN experiment (Santurkar et al.'s shifting noise after BN), on tiny data."""

import importlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfbn import cli
from tfbn.experiments import noisy_bn

lesson = importlib.import_module(noisy_bn.LESSON)


def test_noisy_bn_runs_every_variant_and_writes_its_results(tiny_mnist, tmp_path):
    config = noisy_bn.Config(steps=4, record_every=2, train_size=64, batch_size=16,
                             probe_size=16, seeds=1, seed=3, outdir=str(tmp_path))
    metrics = noisy_bn.run(config, arrays=tiny_mnist)
    assert [variant["name"] for variant in metrics["variants"]] == ["none", "bn", "noisy_bn"]
    assert metrics["seeds"] == [3] and metrics["test_size"] == 32
    for variant in metrics["variants"]:
        assert len(variant["test_accuracy"]["values"]) == 1
        (run,) = variant["runs"]
        assert run["steps"] == [0, 2, 4]
        assert len(run["training_loss"]) == len(run["input_shift"]) == 2
        for measure in noisy_bn.MEASURES:
            assert len(run[measure]) == 3 and all(np.isfinite(run[measure]))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["experiment"] == "noisy_bn" and saved["config"]["steps"] == 4
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_the_noise_is_a_fresh_per_unit_shift_and_scale_in_training_only():
    strength = 1.0
    noise = lesson.ShiftingNoise(strength, seed=5)
    inputs = np.array([[0.0] * 6, [0.0] * 6, [1.0] * 6, [1.0] * 6], dtype="float32")
    first = keras.ops.convert_to_numpy(noise(inputs, training=True))
    # Zeros give the shift m, ones s + m; one draw per unit, shared by the batch.
    shift, scale = first[0], first[2] - first[0]
    assert np.array_equal(first[0], first[1]) and np.array_equal(first[2], first[3])
    assert np.all(np.abs(shift) <= strength) and np.ptp(shift) > 0
    assert np.all(np.abs(scale - 1) <= strength / 2 + 1e-6) and np.ptp(scale) > 0
    second = keras.ops.convert_to_numpy(noise(inputs, training=True))
    assert not np.allclose(first, second)  # a new draw at every step
    assert np.array_equal(keras.ops.convert_to_numpy(noise(inputs, training=False)), inputs)
    replay = lesson.ShiftingNoise(strength, seed=5)
    assert np.array_equal(keras.ops.convert_to_numpy(replay(inputs, training=True)), first)


def test_every_variant_of_a_seed_starts_from_the_same_kernels():
    kernels = {}
    for variant in noisy_bn.VARIANTS:
        keras.utils.set_random_seed(4)
        model = lesson.build_model(variant, 1.0, seed=4)
        kernels[variant] = [layer.kernel.numpy() for layer in model.layers
                            if isinstance(layer, keras.layers.Dense)]
    for variant in ("bn", "noisy_bn"):
        for reference, kernel in zip(kernels["none"], kernels[variant]):
            assert np.array_equal(reference, kernel), variant


def _probe_batch(size=32):
    rng = np.random.default_rng(0)
    return (rng.random((size, 784)).astype("float32"),
            rng.integers(0, 10, size).astype("int32"))


def test_measuring_along_the_gradient_leaves_the_model_as_it_was_and_repeats():
    images, labels = _probe_batch()
    keras.utils.set_random_seed(0)
    model = lesson.build_model("noisy_bn", 1.0, seed=0)
    before = [variable.numpy().copy() for variable in model.variables]
    first = lesson.along_the_gradient(model, images, labels, [0.05, 0.2])
    # Kernels, BN's offsets and moving statistics, and the noise's seed states.
    for value, variable in zip(before, model.variables):
        assert np.array_equal(value, variable.numpy()), variable.path
    # The same noise draw again, so the same numbers.
    assert lesson.along_the_gradient(model, images, labels, [0.05, 0.2]) == first


def test_the_measures_are_the_loss_and_gradient_one_step_along_minus_g():
    images, labels = _probe_batch()
    keras.utils.set_random_seed(1)
    model = lesson.build_model("bn", seed=1)
    step_size = 0.3
    measured = lesson.along_the_gradient(model, images, labels, [0.0, step_size])

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())

    def loss_and_gradient():
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                labels, copy(images, training=True)))
        return float(loss), tape.gradient(loss, copy.trainable_variables)

    loss, gradient = loss_and_gradient()
    for variable, slope in zip(copy.trainable_variables, gradient):
        variable.assign(variable - step_size * slope)
    loss_there, gradient_there = loss_and_gradient()
    change = float(tf.linalg.global_norm([a - b for a, b in zip(gradient_there, gradient)]))
    assert measured["loss"] == pytest.approx(loss, rel=1e-5)
    assert measured["loss_range"] == pytest.approx(abs(loss_there - loss), rel=1e-3)
    assert measured["gradient_change"] == pytest.approx(change, rel=1e-3)
    assert measured["effective_beta"] == pytest.approx(
        change / (step_size * float(tf.linalg.global_norm(gradient))), rel=1e-3)


def test_noisy_bn_options_reach_the_config_and_bad_ones_are_refused():
    config = cli.parse_experiment_options(
        "noisy_bn", noisy_bn.Config(),
        ["--seeds", "5", "--steps", "200", "--record-every", "20", "--noise-strength", "0.5"])
    assert (config.seeds, config.steps, config.record_every, config.noise_strength) == (
        5, 200, 20, 0.5)
    with pytest.raises(SystemExit):
        cli.parse_experiment_options("noisy_bn", noisy_bn.Config(), ["--noise-strength", "2"])
    with pytest.raises(ValueError, match="record_every must divide steps"):
        noisy_bn.Config(steps=100, record_every=30)
    with pytest.raises(ValueError, match="probe_size must be at most train_size"):
        noisy_bn.Config(train_size=100, probe_size=500)

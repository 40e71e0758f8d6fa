"""BN in practice: recalibration against NumPy, freezing, conversion between layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbn
from tfbn import practice


def small_model(layer_class, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="dense"),
                             layer_class(name="bn"), keras.layers.Activation("relu"),
                             keras.layers.Dense(3, name="logits")])


def batches(count=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return [(2 + 3 * rng.standard_normal((size, 6))).astype("float32") for _ in range(count)]


@pytest.mark.parametrize("layer_class", [tfbn.BatchNorm, keras.layers.BatchNormalization])
def test_recalibration_averages_the_per_batch_statistics(layer_class):
    model = small_model(layer_class)
    inputs = batches()
    weights_before = [w.copy() for w in model.get_layer("dense").get_weights()]
    kernel, bias = weights_before
    sums = [x @ kernel + bias for x in inputs]
    changed, = practice.recalibrate_batchnorm(model, tf.data.Dataset.from_tensor_slices(
        np.concatenate(inputs)).batch(16))
    layer = model.get_layer("bn")
    expected_mean = np.mean([s.mean(axis=0) for s in sums], axis=0)
    expected_variance = np.mean([s.var(axis=0) for s in sums], axis=0)
    np.testing.assert_allclose(layer.moving_mean, expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, expected_variance, rtol=1e-5)
    np.testing.assert_array_equal(changed.old_mean, np.zeros(4))
    np.testing.assert_allclose(changed.mean, expected_mean, rtol=1e-5, atol=1e-6)
    assert changed.name == "bn" and changed.mean_shift > 0.1
    for before, after in zip(weights_before, model.get_layer("dense").get_weights()):
        np.testing.assert_array_equal(before, after)
    assert layer.momentum == 0.99, "the layer's own momentum comes back"


def test_recalibration_takes_arrays_pairs_and_a_step_limit():
    inputs = np.concatenate(batches())
    labels = np.zeros(len(inputs), dtype="int32")
    first = small_model(tfbn.BatchNorm)
    practice.recalibrate_batchnorm(first, (inputs, labels), batch_size=16, steps=1)
    only_the_first_batch = small_model(tfbn.BatchNorm)
    practice.recalibrate_batchnorm(only_the_first_batch, inputs[:16])
    np.testing.assert_allclose(first.get_layer("bn").moving_mean,
                               only_the_first_batch.get_layer("bn").moving_mean, rtol=1e-6)
    with pytest.raises(ValueError, match="no batch-normalization layer"):
        practice.recalibrate_batchnorm(keras.Sequential([keras.Input((6,)),
                                                         keras.layers.Dense(2)]), inputs)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        practice.recalibrate_batchnorm(first, inputs, steps=0)


def test_recalibration_reaches_frozen_and_nested_layers_and_keeps_them_frozen():
    inner = small_model(tfbn.BatchNorm)
    inner.get_layer("bn").trainable = False
    outer = keras.Sequential([keras.Input((6,)), inner, keras.layers.Dense(2)])
    changed = practice.recalibrate_batchnorm(outer, np.concatenate(batches()))
    assert [entry.name for entry in changed] == [f"{inner.name}/bn"]
    assert changed[0].mean_shift > 0.1 and inner.get_layer("bn").trainable is False


def test_recalibration_repairs_inference_after_a_short_run():
    """After a few steps the moving statistics still sit near their initial 0 and 1."""
    model = small_model(tfbn.BatchNorm)
    model.compile("adam", "mse")
    inputs = np.concatenate(batches(8))
    targets = np.ones((len(inputs), 3), "float32")
    model.fit(inputs, targets, batch_size=16, epochs=1, verbose=0)
    training_mode = model(inputs[:64], training=True)  # batch statistics
    before = np.abs(model(inputs[:64]) - training_mode).max()
    practice.recalibrate_batchnorm(model, inputs)
    after = np.abs(model(inputs[:64]) - training_mode).max()
    assert after < 0.2 * before


def test_frozen_bn_keeps_its_statistics_and_weights_through_fit():
    model = small_model(tfbn.BatchNorm)
    assert tfbn.freeze_batchnorm(model) == 1
    model.compile("adam", "mse")
    layer = model.get_layer("bn")
    before = [w.copy() for w in layer.get_weights()]
    dense_before = model.get_layer("dense").get_weights()[0].copy()
    inputs = np.concatenate(batches())
    model.fit(inputs, np.ones((len(inputs), 3), "float32"), batch_size=16, verbose=0)
    for old, new in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert not np.array_equal(dense_before, model.get_layer("dense").get_weights()[0])
    np.testing.assert_allclose(model(inputs[:8], training=True), model(inputs[:8]), rtol=1e-6)
    assert tfbn.unfreeze_batchnorm(model) == 1 and layer.trainable


@pytest.mark.parametrize("source, to, target", [
    (keras.layers.BatchNormalization, "tfbn", tfbn.BatchNorm),
    (tfbn.BatchNorm, "keras", keras.layers.BatchNormalization),
])
def test_conversion_swaps_every_layer_and_keeps_the_predictions(source, to, target):
    inner = small_model(source)
    outer = keras.Sequential([keras.Input((6,)), inner, keras.layers.Dense(2, name="head")])
    practice.recalibrate_batchnorm(outer, np.concatenate(batches()))  # non-trivial statistics
    converted = tfbn.convert_batchnorm(outer, to=to)
    layers = practice.batch_norm_layers(converted)
    assert [type(layer) for _, layer in layers] == [target]
    x = np.concatenate(batches(2, seed=1))
    np.testing.assert_allclose(converted(x), outer(x), rtol=1e-5, atol=1e-6)


def test_conversion_overrides_and_refusals():
    model = small_model(keras.layers.BatchNormalization)
    converted = tfbn.convert_batchnorm(model, synchronized=True, implementation="moments")
    layer = converted.get_layer("bn")
    assert layer.synchronized and layer.implementation == "moments"
    with pytest.raises(ValueError, match="to must be one of tfbn, keras"):
        tfbn.convert_batchnorm(model, to="torch")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        tfbn.convert_batchnorm(Subclassed())


def test_tfbn_recalibrate_on_a_run_directory(tiny_mnist, tmp_path, monkeypatch, capsys):
    from tfbn import cli, rundir, training
    from tfbn.config import RunConfig

    training.train("4.2", RunConfig(epochs=1, steps_per_epoch=3, batch_size=16, verbose=0,
                                    logdir=str(tmp_path)), arrays=tiny_mnist)
    monkeypatch.setattr("tfbn.data.load_mnist", lambda *args, **kwargs: tiny_mnist)
    assert cli.main(["recalibrate", str(tmp_path), "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| conv1_bn |" in printed and "| dense_bn |" in printed
    assert "test accuracy 0." in printed and " -> 0." in printed
    model = tfbn.load_model(tmp_path / "recalibrated.keras")
    trained, _ = rundir.load_trained_model(tmp_path)
    assert not np.allclose(model.get_layer("conv1_bn").moving_mean,
                           trained.get_layer("conv1_bn").moving_mean)


def test_tfbn_recalibrate_names_a_directory_without_a_run(tmp_path, capsys):
    from tfbn import cli

    assert cli.main(["recalibrate", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_diagnosis_measures_the_gap_and_leaves_the_model_alone():
    model = small_model(tfbn.BatchNorm)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    inputs = np.concatenate(batches())
    labels = (np.arange(len(inputs)) % 3).astype("int32")
    before = [w.copy() for w in model.get_weights()]
    diagnosis = tfbn.diagnose_batchnorm(model, (inputs, labels), batch_size=16)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    layer, = diagnosis.layers
    dense = inputs @ model.get_layer("dense").get_weights()[0] + model.get_layer(
        "dense").get_weights()[1]
    expected_shift = np.max(np.abs(dense.mean(axis=0)) / np.sqrt(
        np.mean([d.var(axis=0) for d in np.split(dense, 4)], axis=0)))
    assert layer.mean_shift == pytest.approx(expected_shift, rel=1e-4)
    assert set(diagnosis.moving) == {"loss", "accuracy"}
    assert diagnosis.moving["loss"] != diagnosis.recalibrated["loss"]
    text = str(diagnosis)
    assert "| bn |" in text and "recalibrated" in text and "are off (worst: bn" in text


def test_diagnosis_after_recalibration_says_the_statistics_match():
    model = small_model(keras.layers.BatchNormalization)
    inputs = np.concatenate(batches())
    practice.recalibrate_batchnorm(model, inputs, batch_size=16)
    diagnosis = tfbn.diagnose_batchnorm(model, inputs, batch_size=16)
    assert diagnosis.moving is None  # no labels: statistics only
    assert diagnosis.layers[0].mean_shift < 1e-5
    assert str(diagnosis).endswith("the moving statistics match the data")


def test_tfbn_diagnose_on_a_saved_model(tiny_mnist, tmp_path, monkeypatch, capsys):
    from tfbn import cli, steps

    model = steps.load("4.1").build_model("custom")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.save(tmp_path / "model.keras")
    monkeypatch.setattr("tfbn.data.load_mnist", lambda *args, **kwargs: tiny_mnist)
    assert cli.main(["diagnose", str(tmp_path / "model.keras")]) == 0
    printed = capsys.readouterr().out
    assert "| dense1_bn |" in printed and "accuracy: " in printed
    assert "are off" in printed  # fresh statistics (0 and 1) are far from the data's


def test_recalibration_under_a_mirrored_strategy_sets_every_replica(two_replica_strategy):
    with two_replica_strategy.scope():
        model = small_model(tfbn.BatchNorm)
    inputs = batches()
    kernel, bias = model.get_layer("dense").get_weights()
    with two_replica_strategy.scope():
        practice.recalibrate_batchnorm(model, np.concatenate(inputs), batch_size=16)
    expected = np.mean([(x @ kernel + bias).mean(axis=0) for x in inputs], axis=0)
    moving_mean = model.get_layer("bn").moving_mean
    replicas = [keras.ops.convert_to_numpy(value)
                for value in two_replica_strategy.experimental_local_results(moving_mean.value)]
    assert len(replicas) == 2
    for value in replicas:
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)

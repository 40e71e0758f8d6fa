"""TensorBoard logging: a tiny fit, then its event files read back with TensorBoard's reader."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import tfbn
from tfbn.tensorboard import (
    AFTER_TAG,
    BEFORE_TAG,
    INSPECTION_RUN,
    MISCLASSIFIED_TAG,
    BatchNormInspection,
    batch_norm_layers,
    render_misclassified,
    tensorboard_callbacks,
)

EPOCHS = 2
BATCH_SIZE = 16


def small_bn_model():
    """784 -> Dense -> Keras BN -> relu -> Dense -> tfbn BN -> relu -> softmax."""
    inputs = keras.Input((784,), name="pixels")
    x = keras.layers.Dense(20, use_bias=False, name="dense1")(inputs)
    x = keras.layers.BatchNormalization(name="keras_bn")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    x = keras.layers.Dense(16, use_bias=False, name="dense2")(x)
    x = tfbn.BatchNorm(name="tfbn_bn")(x)
    x = keras.layers.Activation("relu", name="relu2")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="softmax")(x)
    return keras.Model(inputs, outputs)


def read_run(directory):
    accumulator = event_accumulator.EventAccumulator(
        str(directory), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return accumulator


def plugin_tags(accumulator, plugin):
    return {tag for tag in accumulator.Tags()["tensors"]
            if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == plugin}


def values(accumulator, tag):
    return [tf.make_ndarray(event.tensor_proto) for event in accumulator.Tensors(tag)]


@pytest.fixture(scope="module")
def logged_run(tiny_mnist, tmp_path_factory):
    (x_train, y_train), (x_test, y_test) = tiny_mnist
    x_train = (x_train / 255.0).astype(np.float32).reshape(-1, 784)
    x_test = (x_test / 255.0).astype(np.float32).reshape(-1, 784)
    keras.utils.set_random_seed(0)
    model = small_bn_model()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=3, decay_rate=0.5)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    logdir = tmp_path_factory.mktemp("tensorboard")
    callbacks = tensorboard_callbacks(logdir, x_test, y_test)
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS,
              validation_data=(x_test, y_test), callbacks=callbacks, verbose=0)
    return {"logdir": logdir, "model": model, "schedule": schedule, "x_test": x_test,
            "y_test": y_test, "steps_per_epoch": len(x_train) // BATCH_SIZE}


def test_callbacks_are_keras_tensorboard_and_inspection(tmp_path):
    images = np.zeros((4, 784), np.float32)
    keras_callback, inspection = tensorboard_callbacks(tmp_path, images, [0, 1, 2, 3])
    assert isinstance(keras_callback, keras.callbacks.TensorBoard)
    assert keras_callback.histogram_freq == 1 and keras_callback.write_graph
    assert keras_callback.update_freq == "epoch"
    assert isinstance(inspection, BatchNormInspection)


def test_both_batch_norm_kinds_are_found(logged_run):
    names = [layer.name for layer in batch_norm_layers(logged_run["model"])]
    assert names == ["keras_bn", "tfbn_bn"]


def test_train_and_test_scalars_per_epoch(logged_run):
    for run in ("train", "validation"):
        accumulator = read_run(logged_run["logdir"] / run)
        assert {"epoch_loss", "epoch_accuracy"} <= plugin_tags(accumulator, "scalars")
        for tag in ("epoch_loss", "epoch_accuracy"):
            assert [event.step for event in accumulator.Tensors(tag)] == list(range(EPOCHS))
            assert all(np.isfinite(value) for value in values(accumulator, tag))


def test_learning_rate_is_the_schedule_at_each_epoch_end(logged_run):
    accumulator = read_run(logged_run["logdir"] / "train")
    logged = values(accumulator, "epoch_learning_rate")
    steps_per_epoch = logged_run["steps_per_epoch"]
    expected = [float(logged_run["schedule"](steps_per_epoch * (epoch + 1)))
                for epoch in range(EPOCHS)]
    np.testing.assert_allclose(logged, expected, rtol=1e-6)
    assert logged[1] < logged[0]


def test_weight_histograms_include_batch_norm_parameters_and_statistics(logged_run):
    histograms = plugin_tags(read_run(logged_run["logdir"] / "train"), "histograms")
    for layer in ("keras_bn", "tfbn_bn"):
        for weight in ("gamma", "beta", "moving_mean", "moving_variance"):
            assert f"{layer}/{weight}/histogram" in histograms
    assert "dense1/kernel/histogram" in histograms


def test_inspection_has_no_duplicate_of_keras_tags(logged_run):
    train_tags = set(read_run(logged_run["logdir"] / "train").Tags()["tensors"])
    inspection_tags = set(read_run(logged_run["logdir"] / INSPECTION_RUN).Tags()["tensors"])
    assert not train_tags & inspection_tags


def test_histograms_before_and_after_normalization(logged_run):
    accumulator = read_run(logged_run["logdir"] / INSPECTION_RUN)
    histograms = plugin_tags(accumulator, "histograms")
    sample_size = len(logged_run["y_test"])
    for layer, units in (("keras_bn", 20), ("tfbn_bn", 16)):
        before = values(accumulator, f"{layer}/{BEFORE_TAG}")
        after = values(accumulator, f"{layer}/{AFTER_TAG}")
        assert {f"{layer}/{BEFORE_TAG}", f"{layer}/{AFTER_TAG}"} <= histograms
        assert [event.step for event in accumulator.Tensors(f"{layer}/{AFTER_TAG}")] \
            == list(range(EPOCHS))
        # Buckets are rows (left edge, right edge, count); every activation is counted once.
        for histogram in before + after:
            assert histogram[:, 2].sum() == pytest.approx(sample_size * units)
        assert not np.allclose(before[-1], after[-1])


def test_after_normalization_histogram_matches_layer_output(logged_run):
    model = logged_run["model"]
    layer = model.get_layer("keras_bn")
    probe = keras.Model(model.inputs[0], layer.output)
    output = np.asarray(probe(logged_run["x_test"], training=False))
    histogram = values(read_run(logged_run["logdir"] / INSPECTION_RUN),
                       f"keras_bn/{AFTER_TAG}")[-1]
    assert histogram[0, 0] == pytest.approx(output.min(), abs=1e-5)
    assert histogram[-1, 1] == pytest.approx(output.max(), abs=1e-5)


def test_misclassified_digits_image(logged_run):
    accumulator = read_run(logged_run["logdir"] / INSPECTION_RUN)
    assert MISCLASSIFIED_TAG in plugin_tags(accumulator, "images")
    images = values(accumulator, MISCLASSIFIED_TAG)
    assert len(images) == EPOCHS
    width, height, png = images[-1]
    decoded = tf.image.decode_png(png).numpy()
    assert decoded.shape[:2] == (int(height), int(width))
    assert decoded.shape[0] >= 100 and decoded.shape[1] >= 400


def test_graphs_are_written(logged_run):
    inspection = read_run(logged_run["logdir"] / INSPECTION_RUN)
    assert inspection.Tags()["graph"]
    node_names = [node.name for node in inspection.Graph().node]
    for layer in ("dense1", "keras_bn", "tfbn_bn", "softmax"):
        assert any(layer in name for name in node_names), layer
    train = read_run(logged_run["logdir"] / "train")
    assert "keras" in plugin_tags(train, "graph_keras_model")


def test_render_misclassified_shows_only_wrong_digits():
    images = np.random.default_rng(0).random((6, 28, 28, 1))
    labels = np.array([0, 1, 2, 3, 4, 5])
    predictions = np.array([0, 7, 2, 9, 4, 5])
    figure = render_misclassified(images, labels, predictions, title="epoch 1")
    (axes,) = figure.axes
    assert [text.get_text() for text in axes.texts] == ["1 → 7", "3 → 9"]
    assert "2 of 6" in figure._suptitle.get_text()


def test_render_misclassified_caps_digits_shown():
    labels = np.zeros(50, int)
    figure = render_misclassified(np.zeros((50, 784)), labels, labels + 1, max_digits_shown=8)
    assert len(figure.axes[0].texts) == 8
    assert "50 of 50" in figure._suptitle.get_text()
    assert "first 8 shown" in figure._suptitle.get_text()


def test_render_misclassified_says_when_all_are_right():
    labels = np.arange(5)
    figure = render_misclassified(np.zeros((5, 784)), labels, labels)
    assert figure.axes == []
    assert "0 of 5" in figure.texts[0].get_text()


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((0, 784)), [], "sample_images is empty"),
    (np.zeros((3, 784)), [1, 2], "3 digits but sample_labels has 2"),
    (np.zeros((3, 10, 10)), [1, 2, 3], "28x28"),
])
def test_bad_samples_are_rejected(tmp_path, images, labels, message):
    with pytest.raises(ValueError, match=message):
        BatchNormInspection(tmp_path, images, labels)


def test_model_without_batch_norm_still_logs_digits_and_graph(tiny_mnist, tmp_path):
    (x_train, y_train), _ = tiny_mnist
    x_train = (x_train / 255.0).astype(np.float32).reshape(-1, 784)
    inputs = keras.Input((784,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, batch_size=16, epochs=1, verbose=0,
              callbacks=[BatchNormInspection(tmp_path, x_train[:20], y_train[:20])])
    accumulator = read_run(tmp_path / INSPECTION_RUN)
    assert plugin_tags(accumulator, "histograms") == set()
    assert plugin_tags(accumulator, "images") == {MISCLASSIFIED_TAG}
    assert accumulator.Tags()["graph"]


def test_histograms_take_an_even_sample_of_large_tensors():
    from tfbn.tensorboard import histogram_sample

    values = np.arange(1000 * 7, dtype=np.float32).reshape(1000, 7)
    sample = histogram_sample(values, limit=700)
    assert 600 <= sample.size <= 700
    assert np.all(np.diff(sample) == 10), "evenly strided through every position"
    assert histogram_sample(values, limit=10_000).size == values.size
    # the stride reaches every one of the 7 channels
    assert set((sample.astype(int) % 7).tolist()) == set(range(7))

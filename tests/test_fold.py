"""fold_batchnorm: the folded model predicts what the original predicts at
inference, with the BN layers gone where they can be folded and reported
where they cannot."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbn.layer
from tfbn.fold import BATCH_NORM_TYPES, export_inference_model, fold_batchnorm

BATCH_NORM_CLASSES = [keras.layers.BatchNormalization, tfbn.layer.BatchNorm]
BN_CLASS_IDS = ["keras", "tfbn"]


def randomize_statistics(model, seed=0):
    """Give every BN layer moving statistics, gamma and beta far from their
    initial values, and every bias a non-zero value, so that a fold that
    ignores any of them changes the predictions."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        for weight in layer.weights:
            if weight.name == "moving_variance":
                value = rng.uniform(0.2, 4.0, weight.shape)
            elif weight.name == "gamma":
                value = rng.choice([-1.0, 1.0], weight.shape) * rng.uniform(0.5, 2.0, weight.shape)
            elif weight.name in ("moving_mean", "beta", "bias"):
                value = rng.normal(0.0, 1.0, weight.shape)
            else:
                continue
            weight.assign(value.astype("float32"))


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def assert_same_predictions(original, folded, inputs):
    expected = keras.tree.flatten(original(inputs, training=False))
    actual = keras.tree.flatten(folded(inputs, training=False))
    assert len(actual) == len(expected)
    for expected_output, actual_output in zip(expected, actual):
        expected_output = np.asarray(expected_output)
        scale = max(1.0, float(np.abs(expected_output).max()))
        np.testing.assert_allclose(actual_output, expected_output, rtol=0, atol=1e-5 * scale)


def batch_norm_names(model):
    return [layer.name for layer in _all_layers(model) if isinstance(layer, BATCH_NORM_TYPES)]


def random_inputs(shape, seed=1):
    return np.random.default_rng(seed).normal(0.0, 1.0, (4,) + shape).astype("float32")


@pytest.mark.parametrize("bn_class", BATCH_NORM_CLASSES, ids=BN_CLASS_IDS)
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize(
    "center, scale",
    [(True, True), (False, True), (True, False), (False, False)],
    ids=["center_scale", "scale_only", "center_only", "neither"],
)
def test_dense_fold_in_sequential(bn_class, use_bias, center, scale):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, use_bias=use_bias, name="dense"),
            bn_class(center=center, scale=scale, name="bn"),
            keras.layers.ReLU(),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    randomize_statistics(model)

    result = fold_batchnorm(model, verbose=False)

    assert isinstance(result.model, keras.Sequential)
    assert result.folded == ["bn"] and result.kept == []
    assert batch_norm_names(result.model) == []
    assert result.model.get_layer("dense").use_bias
    assert_same_predictions(model, result.model, random_inputs((6,)))


CONV_CASES = {
    "conv1d": (keras.layers.Conv1D, dict(filters=4, kernel_size=3), (10, 3)),
    "conv2d": (keras.layers.Conv2D, dict(filters=4, kernel_size=3), (8, 8, 3)),
    "conv3d": (keras.layers.Conv3D, dict(filters=4, kernel_size=2), (4, 4, 4, 2)),
    "depthwise2d": (
        keras.layers.DepthwiseConv2D,
        dict(kernel_size=3, depth_multiplier=2),
        (8, 8, 3),
    ),
}


@pytest.mark.parametrize("bn_class", BATCH_NORM_CLASSES, ids=BN_CLASS_IDS)
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_fold_in_functional_model(case, use_bias, bn_class):
    conv_class, conv_kwargs, input_shape = CONV_CASES[case]
    inputs = keras.Input(input_shape)
    features = conv_class(use_bias=use_bias, name="conv", **conv_kwargs)(inputs)
    features = bn_class(name="bn")(features)
    outputs = keras.layers.Activation("relu")(features)
    model = keras.Model(inputs, outputs)
    randomize_statistics(model)

    result = fold_batchnorm(model, verbose=False)

    assert result.folded == ["bn"] and result.kept == []
    assert batch_norm_names(result.model) == []
    assert_same_predictions(model, result.model, random_inputs(input_shape))


def _channels_first_conv_runs():
    layer = keras.layers.Conv2D(2, 3, data_format="channels_first")
    try:
        layer(np.zeros((1, 3, 5, 5), "float32"))
    except (tf.errors.OpError, ValueError):
        return False
    return True


@pytest.mark.parametrize("bn_class", BATCH_NORM_CLASSES, ids=BN_CLASS_IDS)
@pytest.mark.parametrize(
    "conv_class, conv_kwargs",
    [
        (keras.layers.Conv2D, dict(filters=4)),
        (keras.layers.DepthwiseConv2D, dict(depth_multiplier=2)),
    ],
    ids=["conv2d", "depthwise2d"],
)
def test_channels_first_conv_folds_on_axis_1(conv_class, conv_kwargs, bn_class):
    if not _channels_first_conv_runs():
        pytest.skip("this TensorFlow build cannot run a channels_first Conv2D on CPU")
    model = keras.Sequential(
        [
            keras.Input((3, 9, 9)),
            conv_class(kernel_size=3, data_format="channels_first", name="conv", **conv_kwargs),
            bn_class(axis=1, name="bn"),
        ]
    )
    randomize_statistics(model)

    result = fold_batchnorm(model, verbose=False)

    assert result.folded == ["bn"]
    assert_same_predictions(model, result.model, random_inputs((3, 9, 9)))


@pytest.mark.parametrize("input_width", [8, None], ids=["width_equals_channels", "unknown_width"])
def test_channels_first_conv_whose_width_may_equal_channels_keeps_batch_norm(input_width):
    """Keras adds a channels_first bias along the last axis when that axis is
    as long as the channel axis; folding there would change the predictions."""
    if not _channels_first_conv_runs():
        pytest.skip("this TensorFlow build cannot run a channels_first Conv2D on CPU")
    model = keras.Sequential(
        [
            keras.Input((3, 8, input_width)),
            keras.layers.Conv2D(6, 3, data_format="channels_first", name="conv"),
            keras.layers.BatchNormalization(axis=1, name="bn"),
        ]
    )
    randomize_statistics(model)

    result = fold_batchnorm(model, verbose=False)

    assert result.folded == [] and "channels_first" in dict(result.kept)["bn"]
    assert_same_predictions(model, result.model, random_inputs((3, 8, 8)))


@pytest.mark.parametrize("bn_class", BATCH_NORM_CLASSES, ids=BN_CLASS_IDS)
def test_unfoldable_batch_norm_layers_stay_and_are_reported(bn_class, capsys):
    inputs = keras.Input((6,))
    shared_output = keras.layers.Dense(5, name="feeds_two")(inputs)
    after_shared = bn_class(name="bn_input_shared")(shared_output)
    side_branch = keras.layers.Dense(5, name="side")(shared_output)
    activated = keras.layers.Dense(5, activation="relu", name="relu_dense")(
        after_shared + side_branch
    )
    after_fused_relu = bn_class(name="bn_after_relu_dense")(activated)
    after_activation = bn_class(name="bn_after_activation")(
        keras.layers.Activation("tanh")(after_fused_relu)
    )
    wrong_axis = bn_class(axis=1, name="bn_wrong_axis")(
        keras.layers.Dense(5, name="dense_3d")(keras.layers.Reshape((5, 1))(after_activation))
    )
    forced_training = bn_class(name="bn_training_true")(
        keras.layers.Dense(5, name="dense_for_training")(keras.layers.Flatten()(wrong_axis)),
        training=True,
    )
    folded_one = bn_class(name="bn_ok")(keras.layers.Dense(4, name="dense_ok")(forced_training))
    model = keras.Model(inputs, folded_one)
    randomize_statistics(model)

    result = fold_batchnorm(model)

    assert result.folded == ["bn_ok"]
    reasons = dict(result.kept)
    assert set(reasons) == {
        "bn_input_shared",
        "bn_after_relu_dense",
        "bn_after_activation",
        "bn_wrong_axis",
        "bn_training_true",
    }
    assert "used 2 times" in reasons["bn_input_shared"]
    assert "'relu'" in reasons["bn_after_relu_dense"]
    assert "Activation" in reasons["bn_after_activation"]
    assert "axis" in reasons["bn_wrong_axis"]
    assert "training" in reasons["bn_training_true"]
    assert sorted(batch_norm_names(result.model)) == sorted(reasons)
    printed = capsys.readouterr().out
    assert "folded bn_ok into dense_ok" in printed
    assert all(f"kept   {name}:" in printed for name in reasons)
    # bn_training_true uses batch statistics in both models alike.
    assert_same_predictions(model, result.model, random_inputs((6,)))


def test_batch_norm_that_is_a_model_output_is_folded():
    inputs = keras.Input((6,))
    first = keras.layers.BatchNormalization(name="bn_first")(keras.layers.Dense(5)(inputs))
    second = keras.layers.BatchNormalization(name="bn_second")(keras.layers.Dense(3)(first))
    model = keras.Model(inputs, [first, second])
    randomize_statistics(model)

    result = fold_batchnorm(model, verbose=False)

    assert result.folded == ["bn_first", "bn_second"]
    assert batch_norm_names(result.model) == []
    assert_same_predictions(model, result.model, random_inputs((6,)))


def test_nested_model_is_folded_recursively():
    inner = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, name="dense"),
            keras.layers.BatchNormalization(name="bn"),
        ],
        name="inner",
    )
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(2, name="head")(keras.layers.ReLU()(inner(inputs)))
    model = keras.Model(inputs, outputs)
    randomize_statistics(model)

    result = fold_batchnorm(model, verbose=False)

    assert result.folded == ["inner/bn"]
    assert batch_norm_names(result.model) == []
    assert_same_predictions(model, result.model, random_inputs((6,)))


def test_original_model_is_left_unchanged():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, use_bias=False),
            keras.layers.BatchNormalization(),
        ]
    )
    randomize_statistics(model)
    inputs = random_inputs((6,))
    config_before = model.get_config()
    weights_before = [weight.copy() for weight in model.get_weights()]
    predictions_before = np.asarray(model(inputs, training=False))

    result = fold_batchnorm(model, verbose=False)

    assert result.model is not model
    assert model.get_config() == config_before
    assert len(model.get_weights()) == len(weights_before)
    for weight, weight_before in zip(model.get_weights(), weights_before):
        np.testing.assert_array_equal(weight, weight_before)
    np.testing.assert_array_equal(model(inputs, training=False), predictions_before)
    assert not model.layers[0].use_bias


def test_subclassed_model_raises():
    class TwoLayers(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(4)
            self.batch_norm = keras.layers.BatchNormalization()

        def call(self, inputs, training=False):
            return self.batch_norm(self.dense(inputs), training=training)

    model = TwoLayers()
    model(random_inputs((3,)))

    with pytest.raises(ValueError, match="subclassed"):
        fold_batchnorm(model, verbose=False)


def test_shared_layer_raises():
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    outputs = keras.layers.BatchNormalization()(shared(shared(inputs)))
    model = keras.Model(inputs, outputs)

    with pytest.raises(ValueError, match="'shared'.*shared layer"):
        fold_batchnorm(model, verbose=False)


def test_unbuilt_model_raises():
    model = keras.Sequential([keras.layers.Dense(4), keras.layers.BatchNormalization()])

    with pytest.raises(ValueError, match="not built"):
        fold_batchnorm(model, verbose=False)


def test_export_inference_model_writes_keras_file_and_saved_model(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    randomize_statistics(model)
    inputs = random_inputs((8, 8, 1))
    directory = tmp_path / "export"

    result = export_inference_model(model, str(directory), verbose=False)

    assert len(result.folded) == 1
    reloaded = keras.models.load_model(directory / "model.keras")
    assert batch_norm_names(reloaded) == []
    assert_same_predictions(model, reloaded, inputs)
    saved_model = tf.saved_model.load(str(directory / "saved_model"))
    np.testing.assert_allclose(
        saved_model.serve(inputs), model(inputs, training=False), rtol=0, atol=1e-5
    )


def test_export_inference_model_rejects_a_file_as_directory(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    not_a_directory = tmp_path / "file.txt"
    not_a_directory.write_text("")

    with pytest.raises(ValueError, match="directory="):
        export_inference_model(model, str(not_a_directory), verbose=False)

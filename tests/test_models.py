"""The networks the lesson scripts write out, and the builders the experiments use."""

import keras
import numpy as np
import pytest

from tfbn import BatchNorm, models, steps
from tfbn.training import resolve_bn


def bn_layers(model):
    return [layer for layer in model.layers
            if isinstance(layer, (BatchNorm, keras.layers.BatchNormalization))]


def layer_configs(model):
    """Each layer's class and configuration, without its name-independent dtype noise."""
    return [(type(layer).__name__, {key: value for key, value in layer.get_config().items()
                                    if key != "dtype"})
            for layer in model.layers]


def test_five_layer_network_has_the_codelab_size():
    model = steps.load("2.0").build_model()
    widths = [784, 200, 100, 60, 30, 10]
    expected = sum(a * b + b for a, b in zip(widths, widths[1:]))
    assert model.count_params() == expected == 185_300


@pytest.mark.parametrize("bn, layer_class", [("custom", BatchNorm),
                                             ("keras", keras.layers.BatchNormalization)])
@pytest.mark.parametrize("name, count, scale", [("4.0", 4, True), ("4.1", 4, False),
                                                 ("4.2", 4, False)])
def test_bn_steps_place_bn_after_a_bias_free_layer(name, count, scale, bn, layer_class):
    model = steps.load(name).build_model(bn)
    layers = bn_layers(model)
    assert len(layers) == count
    for layer in layers:
        assert type(layer) is layer_class
        assert layer.scale is scale and layer.center
        producer = layer._inbound_nodes[0].parent_nodes[0].operation
        assert producer.use_bias is False
        consumer = layer._outbound_nodes[0].operation
        assert isinstance(consumer, keras.layers.Activation)


@pytest.mark.parametrize("name, plain", [("4.0", "2.0"), ("4.1", "2.1"), ("4.2", None)])
def test_without_bn_each_bn_layer_becomes_the_bias_it_replaced(name, plain):
    model = steps.load(name).build_model("none")
    assert bn_layers(model) == []
    biases = [layer for layer in model.layers if isinstance(layer, models.Bias)]
    assert len(biases) == 4
    if plain is not None:  # the same parameters as the plain step's network
        assert model.count_params() == steps.load(plain).build_model().count_params()


def test_bias_layer_adds_a_trained_offset_per_feature():
    layer = models.Bias(scale=True)
    x = np.arange(6, dtype="float32").reshape(2, 3)
    assert np.array_equal(layer(x), x)
    layer.bias.assign([1.0, -2.0, 0.5])
    assert np.array_equal(layer(x), x + np.array([1.0, -2.0, 0.5], "float32"))
    assert [weight.name for weight in layer.trainable_weights] == ["bias"]


def test_batch_norm_type_names_the_choices():
    assert models.batch_norm_type("custom") is BatchNorm
    assert models.batch_norm_type("keras") is keras.layers.BatchNormalization
    with pytest.raises(ValueError, match="bn must be one of custom, keras, none; got 'fast'"):
        models.batch_norm_type("fast")


def test_the_4_2_network_has_the_codelab_shapes():
    model = steps.load("4.2").build_model("custom")
    shapes = [tuple(model.get_layer(name).output.shape[1:])
              for name in ("conv1", "conv2", "conv3", "dense")]
    assert shapes == [(28, 28, 24), (14, 14, 48), (7, 7, 64), (200,)]


@pytest.mark.parametrize("name, build", [
    ("4.0", lambda bn: models.dense_network(models.FIVE_LAYERS, activation="sigmoid", bn=bn,
                                            bn_scale=True)),
    ("4.2", lambda bn: models.conv_network(models.CONV_4_2, bn=bn, dropout_rate=0.25)),
])
@pytest.mark.parametrize("bn", ["custom", "keras"])
def test_the_experiments_builders_make_the_lessons_networks(name, build, bn):
    assert layer_configs(build(bn)) == layer_configs(steps.load(name).build_model(bn))


def test_bn_choice_defaults_by_step_and_is_checked():
    assert resolve_bn(steps.get("4.2"), None) == "custom"
    assert resolve_bn(steps.get("3.0"), None) == "none"
    with pytest.raises(ValueError, match="has no batch norm"):
        resolve_bn(steps.get("3.0"), "keras")


def test_unknown_step_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown step '9.9'; known steps: 1.0, 2.0"):
        steps.get("9.9")


def test_dropout_before_bn_needs_a_bn_layer():
    with pytest.raises(ValueError, match="dropout_before_bn needs a BN layer"):
        models.conv_network(models.CONV_4_2, bn="none", dropout_rate=0.25,
                            dropout_before_bn=True)


def test_debiased_moving_averages_are_passed_to_the_custom_layer_only():
    model = models.dense_network((8, 4), activation="sigmoid", bn="custom", debiased=True)
    assert all(layer.debiased for layer in bn_layers(model))
    with pytest.raises(ValueError, match="debiased moving averages need bn='custom'"):
        models.dense_network((8, 4), bn="keras", debiased=True)

"""The BN layer `--bn` selects, and the codelab's networks as builders for the experiments.

The codelab steps write their networks out in their lesson scripts (`tutorials/step_*.py`);
the experiments vary those networks (dropout before BN, debiased averages, other widths)
and build them here. `tests/test_models.py` checks that the two agree layer for layer.

Placement follows the codelab's README_BATCHNORM: the layer before BN has no bias (BN's
offset `beta` replaces it), BN sits between the weighted sum and the activation, and BN's
scale `gamma` is only needed before an activation that is not scale invariant (sigmoid,
not ReLU).
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfbn.config import BN_CHOICES
from tfbn.layer import BatchNorm

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
FIVE_LAYERS = (200, 100, 60, 30)
CONV_4_2 = ((24, 6, 1), (48, 5, 2), (64, 4, 2))


@keras.saving.register_keras_serializable(package="tfbn")
class Bias(keras.layers.Layer):
    """A learnt offset per feature (last axis), and nothing else.

    With `--bn none` a BN step's network has this in each BN layer's place: the bias that
    BN's offset beta replaced, so the same network trains without normalization. It takes
    BN's `scale` and `center` arguments and ignores them: no BN, no gamma.
    """

    def __init__(self, scale=True, center=True, **kwargs):
        super().__init__(**kwargs)

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],),
                                    initializer="zeros")

    def call(self, inputs):
        return inputs + keras.ops.cast(self.bias, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def batch_norm_type(bn: str) -> type:
    """The layer class `--bn` names: "custom" tfbn.BatchNorm, "keras" the built-in
    keras.layers.BatchNormalization, "none" `Bias` (no normalization, the bias back)."""
    layers = {"custom": BatchNorm, "keras": keras.layers.BatchNormalization, "none": Bias}
    if bn not in layers:
        raise ValueError(f"bn must be one of {', '.join(layers)}; got {bn!r}")
    return layers[bn]


def normalization(bn: str, *, scale: bool, name: str, momentum: float = 0.99,
                  debiased: bool = False):
    """The BN layer named by `bn` ("custom" -> tfbn.BatchNorm, "keras" -> built-in);
    `debiased` (the codelab's moving average) exists only in the custom layer."""
    if bn == "custom":
        return BatchNorm(scale=scale, momentum=momentum, debiased=debiased, name=name)
    if debiased:
        raise ValueError(f"debiased moving averages need bn='custom', got bn={bn!r}")
    if bn == "keras":
        return keras.layers.BatchNormalization(scale=scale, momentum=momentum, name=name)
    raise ValueError(f"bn must be 'custom' or 'keras' here, got {bn!r}")


def _check_bn(bn: str) -> None:
    if bn not in BN_CHOICES:
        raise ValueError(f"bn must be one of {', '.join(BN_CHOICES)}; got {bn!r}")


def _weighted_sum_block(x, layer_factory, *, activation: str, bn: str, bn_scale: bool,
                        name: str, momentum: float, dropout_before_bn: float = 0.0,
                        debiased: bool = False):
    """layer -> [dropout] -> [BN] -> activation; the layer keeps its bias only when there is
    no BN. Dropout goes here only when it must come before BN; after the activation is the
    callers' business."""
    if bn == "none":
        x = layer_factory(use_bias=True, name=name)(x)
    else:
        x = layer_factory(use_bias=False, name=name)(x)
        if dropout_before_bn:
            x = keras.layers.Dropout(dropout_before_bn, name=f"{name}_dropout")(x)
        x = normalization(bn, scale=bn_scale, name=f"{name}_bn", momentum=momentum,
                          debiased=debiased)(x)
    return keras.layers.Activation(activation, name=f"{name}_{activation}")(x)


def _classifier(x):
    """Logits, then a softmax kept in float32 so mixed precision leaves the loss exact."""
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="softmax")(logits)


def softmax_regression(name: str = "softmax_regression") -> keras.Model:
    """Step 1.0: one dense layer, 784 -> 10, softmax."""
    inputs = keras.Input(shape=(784,), name="pixels")
    return keras.Model(inputs, _classifier(inputs), name=name)


def dense_network(units: Sequence[int] = (200, 100, 60, 30), *, activation: str = "sigmoid",
                  bn: str = "none", bn_scale: bool = True, dropout_rate: float = 0.0,
                  momentum: float = 0.99, debiased: bool = False,
                  name: str = "dense_network") -> keras.Model:
    """Steps 2.x and 4.0/4.1: fully connected hidden layers, then a 10-way softmax."""
    _check_bn(bn)
    inputs = keras.Input(shape=(784,), name="pixels")
    x = inputs
    for index, width in enumerate(units, start=1):
        x = _weighted_sum_block(
            x, lambda **kw: keras.layers.Dense(width, **kw), activation=activation, bn=bn,
            bn_scale=bn_scale, name=f"dense{index}", momentum=momentum, debiased=debiased)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name=f"dense{index}_dropout")(x)
    return keras.Model(inputs, _classifier(x), name=name)


def conv_network(convolutions: Sequence[tuple[int, int, int]], dense_units: int = 200, *,
                 bn: str = "none", dropout_rate: float = 0.0, dropout_before_bn: bool = False,
                 momentum: float = 0.99, name: str = "conv_network") -> keras.Model:
    """Steps 3.x and 4.2: (filters, kernel size, stride) convolutions with ReLU, "same"
    padding, then a dense ReLU layer (dropout after it, or with `dropout_before_bn` between
    the dense layer and its BN) and a 10-way softmax."""
    _check_bn(bn)
    if dropout_before_bn and bn == "none":
        raise ValueError("dropout_before_bn needs a BN layer; got bn='none'")
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = inputs
    for index, (filters, kernel_size, strides) in enumerate(convolutions, start=1):
        x = _weighted_sum_block(
            x, lambda **kw: keras.layers.Conv2D(filters, kernel_size, strides=strides,
                                                padding="same", **kw),
            activation="relu", bn=bn, bn_scale=False, name=f"conv{index}", momentum=momentum)
    x = keras.layers.Flatten(name="flatten")(x)
    x = _weighted_sum_block(
        x, lambda **kw: keras.layers.Dense(dense_units, **kw), activation="relu", bn=bn,
        bn_scale=False, name="dense", momentum=momentum,
        dropout_before_bn=dropout_rate if dropout_before_bn else 0.0)
    if dropout_rate and not dropout_before_bn:
        x = keras.layers.Dropout(dropout_rate, name="dense_dropout")(x)
    return keras.Model(inputs, _classifier(x), name=name)

"""The codelab's steps, 1.0 to 4.2: each a model, an optimiser and the codelab's result.

Iterations become epochs: the codelab trains 10,000 iterations of batch 100, and
10,000 x 100 / 60,000 images is about 17 epochs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras

from tfbn import models
from tfbn.schedules import DecayToFloor

RELU_DECAY = DecayToFloor(peak=0.003, floor=0.0001, decay_steps=2000)
BN_DENSE_DECAY = DecayToFloor(peak=0.03, floor=0.0001, decay_steps=1000)
BN_CONV_DECAY = DecayToFloor(peak=0.02, floor=0.0001, decay_steps=1600)


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    script: str
    title: str
    build_model: Callable[[str], keras.Model]
    learning_rate: float | DecayToFloor
    optimizer: str
    epochs: int
    flat: bool
    codelab_accuracy: float
    uses_bn: bool = False

    def make_optimizer(self, learning_rate_scale: float = 1.0) -> keras.optimizers.Optimizer:
        if isinstance(self.learning_rate, DecayToFloor):
            learning_rate = self.learning_rate.scaled(learning_rate_scale)
        else:
            learning_rate = self.learning_rate * learning_rate_scale
        if self.optimizer == "sgd":
            return keras.optimizers.SGD(learning_rate)
        return keras.optimizers.Adam(learning_rate)


def _no_bn(build: Callable[[], keras.Model]) -> Callable[[str], keras.Model]:
    def build_model(bn: str) -> keras.Model:
        if bn != "none":
            raise ValueError(f"this step has no batch norm; --bn {bn} does not apply to it")
        return build()
    return build_model


FIVE_LAYERS = (200, 100, 60, 30)
CONV_3_0 = ((4, 5, 1), (8, 5, 2), (12, 4, 2))
CONV_3_1 = ((6, 6, 1), (12, 5, 2), (24, 4, 2))
CONV_4_2 = ((24, 6, 1), (48, 5, 2), (64, 4, 2))

STEPS = {
    step.name: step for step in [
        # The codelab minimises the cross-entropy summed over a batch of 100 with rate 0.005;
        # Keras averages over the batch, so the same update needs 100 x 0.005.
        Step("1.0", "step_1_0_softmax", "softmax regression, 784 -> 10, gradient descent",
             _no_bn(models.softmax_regression), 0.5, "sgd", 17, True, 0.927),
        Step("2.0", "step_2_0_five_layers_sigmoid", "five dense layers, sigmoid, Adam",
             _no_bn(lambda: models.dense_network(FIVE_LAYERS, activation="sigmoid")),
             0.003, "adam", 17, True, 0.979),
        Step("2.1", "step_2_1_five_layers_relu_lrdecay",
             "ReLU instead of sigmoid, learning rate decay",
             _no_bn(lambda: models.dense_network(FIVE_LAYERS, activation="relu")),
             RELU_DECAY, "adam", 17, True, 0.982),
        Step("2.2", "step_2_2_five_layers_relu_lrdecay_dropout", "dropout 0.25 after each layer",
             _no_bn(lambda: models.dense_network(FIVE_LAYERS, activation="relu",
                                                 dropout_rate=0.25)),
             RELU_DECAY, "adam", 17, True, 0.982),
        Step("3.0", "step_3_0_convolutional", "three convolutional layers, dense 200",
             _no_bn(lambda: models.conv_network(CONV_3_0)),
             RELU_DECAY, "adam", 17, False, 0.989),
        Step("3.1", "step_3_1_convolutional_bigger_dropout",
             "bigger convolutions, dropout on the dense layer",
             _no_bn(lambda: models.conv_network(CONV_3_1, dropout_rate=0.25)),
             RELU_DECAY, "adam", 17, False, 0.993),
        Step("4.0", "step_4_0_batchnorm_five_layers_sigmoid",
             "batch norm (scale and offset) before each sigmoid",
             lambda bn: models.dense_network(FIVE_LAYERS, activation="sigmoid", bn=bn,
                                             bn_scale=True),
             BN_DENSE_DECAY, "adam", 17, True, 0.981, uses_bn=True),
        Step("4.1", "step_4_1_batchnorm_five_layers_relu",
             "batch norm (offset only) before each ReLU",
             lambda bn: models.dense_network(FIVE_LAYERS, activation="relu", bn=bn,
                                             bn_scale=False),
             BN_DENSE_DECAY, "adam", 17, True, 0.985, uses_bn=True),
        Step("4.2", "step_4_2_batchnorm_convolutional",
             "batch norm on every layer of the bigger conv net, dropout on dense",
             lambda bn: models.conv_network(CONV_4_2, bn=bn, dropout_rate=0.25),
             BN_CONV_DECAY, "adam", 17, False, 0.995, uses_bn=True),
    ]
}


def get(name: str) -> Step:
    """The step called `name` ("4.2"); a ValueError listing the known steps otherwise."""
    try:
        return STEPS[name]
    except KeyError:
        known = ", ".join(STEPS)
        raise ValueError(f"unknown step {name!r}; known steps: {known}") from None

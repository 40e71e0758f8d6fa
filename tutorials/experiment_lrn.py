# %% [markdown]
# # Experiment: with batch norm, is local response normalization unnecessary?
#
# **The claim.** AlexNet (Krizhevsky, Sutskever and Hinton 2012, section 3.3) divides each
# ReLU output by the activity of its neighbouring channels at the same position, "local
# response normalization" (LRN), and credits it with 1.4 points of top-1 error (1.2 of
# top-5) on ImageNet. The BN paper (Ioffe and Szegedy 2015, section 4.2.1) removes it from
# its BN-Inception: "with Batch Normalization it is not necessary" (VGG, Simonyan and
# Zisserman 2014, section 4.1, had found it no help even without BN). Is LRN worth
# anything on a network that has BN, or on one that has not, and what does it cost?
#
# **The experiment.** Step 4.2's convolutional network four ways: plain (no
# normalization: the convolutions and the dense layer keep their biases), LRN only, BN only
# (step 4.2), and LRN and BN both. LRN has AlexNet's constants and placement: after the
# ReLU of the first two convolutions. For a seed, all four start from the same kernels and
# see the same batches; 3 seeds. The experiment reports the test accuracy, the wall (and
# CPU) time of an epoch, and how much LRN's divisor actually varies in the trained networks.
#
# **Result** (the default run: 10,000 training images, 2 epochs, seeds 0-2; the mean ±
# sd over the seeds; `docs/experiments.md` has the figure and the full table): plain 97.53 ± 0.21% test
# accuracy, LRN only 97.19 ± 0.21%, BN only 97.96 ± 0.21%, LRN + BN 97.69 ± 0.49%: LRN
# buys nothing with or without BN (within the noise) and adds 70% CPU per epoch; its
# divisor moves by less than 0.1% from the constant 2^0.75.
#
# Run it (`--help` lists every option; `tfbn experiment lrn` runs the same):
#
#     python tutorials/experiment_lrn.py      # about 5 minutes on 2 CPU cores
#     tfbn experiment lrn --train-size 60000 --epochs 10 --seeds 5 --bn-momentum 0.99
#                                               # the full setting, about 3.5 hours

# %% [markdown]
# ## Setup

# %%
from tfbn import BatchNorm, cli  # first: tfbn quiets TensorFlow's start-up logs
import keras
import tensorflow as tf
from keras import layers

from tfbn.experiments import lrn as experiment

# %% [markdown]
# ## The data
#
# The experiment draws `--train-size` training digits (the same ones for every network)
# and gives each network a tf.data pipeline of 28x28x1 images in batches of 100 that
# reshuffles every epoch, seeded, so that all variants of a seed see the same batches.

# %% [markdown]
# ## Local response normalization
#
# AlexNet's formula, for the ReLU output `a[i]` of channel `i` (of `N`) at one position:
#
#     b[i] = a[i] / (k + alpha * S[i])**beta,   S[i] = sum of a[j]**2 over the channels
#                                                j = i - n/2, ..., i + n/2 (those in 0..N-1)
#
# with `k = 2, n = 5, alpha = 1e-4, beta = 0.75`: a channel is damped when it and its 4
# neighbours (2 on each side, in the order of the channels) fire strongly at the same
# place. `tf.nn.local_response_normalization` computes the same thing; its `depth_radius`
# is `n/2` = 2 (not `n`), its `bias` is `k`, and its `alpha` multiplies the sum itself, as
# in the paper (Caffe's LRN divides its alpha by `n`). LRN learns nothing: no weights.
#
# Note the scale: for activations of order 1, `alpha * S` is of order 1e-4, next to
# `k = 2`, and LRN is then a constant factor `2**-0.75 = 0.59`. It normalizes only where
# activations reach tens (AlexNet's inputs were raw pixel values, centred, of order 100;
# these are 0-1). With BN, a constant factor in front of the next convolution is undone
# by that convolution's BN. The experiment measures the divisor in the trained networks.


# %%
@keras.saving.register_keras_serializable(package="tfbn")
class LocalResponseNormalization(keras.layers.Layer):
    """AlexNet's LRN across channels (the last axis); the defaults are AlexNet's constants
    in TensorFlow's terms (depth_radius = n/2)."""

    def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def call(self, inputs):
        return tf.nn.local_response_normalization(
            inputs, depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha,
            beta=self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius,
                "bias": self.bias, "alpha": self.alpha, "beta": self.beta}


# %% [markdown]
# ## The model
#
# Step 4.2's network (6x6x24, 5x5x48 stride 2, 4x4x64 stride 2, dense 200, dropout 0.25
# after the dense ReLU). `bn=True` is step 4.2: `BatchNorm(scale=False)` between each
# weighted sum and its ReLU, and no bias before it (BN's offset `beta` replaces it).
# `bn=False` gives the weighted sums their biases back. `lrn=True` puts LRN after the ReLU
# of the first two convolutions, where AlexNet has it. The kernels have the same shapes in
# all four, so a seed gives all four the same initial kernels.

# %%
CONVOLUTIONS = ((24, 6, 1), (48, 5, 2), (64, 4, 2))  # (filters, kernel size, stride)
LRN_AFTER = ("conv1", "conv2")  # AlexNet: after the ReLU of its first two convolutions


def build_model(lrn: bool, bn: bool, bn_momentum: float = 0.99) -> keras.Model:
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = inputs
    for index, (filters, kernel_size, strides) in enumerate(CONVOLUTIONS, start=1):
        name = f"conv{index}"
        x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                          use_bias=not bn, name=name)(x)
        if bn:
            x = BatchNorm(scale=False, momentum=bn_momentum, name=f"{name}_bn")(x)
        x = layers.Activation("relu", name=f"{name}_relu")(x)
        if lrn and name in LRN_AFTER:
            x = LocalResponseNormalization(name=f"{name}_lrn")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(200, use_bias=not bn, name="dense")(x)
    if bn:
        x = BatchNorm(scale=False, momentum=bn_momentum, name="dense_bn")(x)
    x = layers.Activation("relu", name="dense_relu")(x)
    x = layers.Dropout(0.25, name="dense_dropout")(x)
    outputs = layers.Dense(10, activation="softmax", name="softmax")(x)
    return keras.Model(inputs, outputs, name=experiment.variant_name(lrn, bn))


# %% [markdown]
# ## The optimizer
#
# Adam at a constant `--learning-rate` (0.003), the same for all four networks: step
# 3.1's peak rate, at which the network without BN trains well. BN would take more (step
# 4.2 starts at 0.02), but a rate chosen for one variant would favour it, and a constant
# rate keeps a short run from spending most of its steps on a decay.


# %%
def make_optimizer(learning_rate: float) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(learning_rate)


# %% [markdown]
# ## Train and compare
#
# `experiment.run` trains, for each seed, the four variants one after the other with
# `model.fit` (so that a change in the shared machine's load falls on all four alike),
# times each `fit`, evaluates the 10,000 test digits, measures LRN's divisor, prints each
# variant's mean ± sd and the test set's noise floor, and writes `figure.png` and
# `metrics.json` into `--outdir`.

# %%
CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("lrn", CONFIG))

# %% [markdown]
# # Experiment: with batch norm, distort the training images less?
#
# **The claim.** The BN paper (Ioffe and Szegedy 2015, section 4.2.1, "Reduce the
# photometric distortions") and the codelab ("with BN, use less image distortion"): a BN
# network trains faster and so sees each training example fewer times; it should be shown
# more of the real images and fewer distorted ones. If that holds, distortion should help
# a BN network less than the same network without BN.
#
# **The experiment.** The step 4.2 convolutional network, with BN and without it (each BN
# layer then becomes the bias it replaced), trained on images shifted and rotated at
# random: not at all (none), lightly (up to ±2 pixels and ±10°) or strongly (up to ±4
# pixels and ±20°). The same epochs for all; for a seed, every network starts from the
# same kernels and sees the same batches, and the light and strong distortions draw the
# same random numbers, scaled. 3 seeds. The gain of a strength is its test accuracy minus
# that of no distortion, seed by seed; the default run trains none and strong.
#
# **Result** (the default run: 10,000 training images, 3 epochs, strengths none and
# strong, seeds 0-2; the mean ± sd over the seeds; `docs/experiments.md` has the figure
# and the full table): BN 98.11 ± 0.18% without distortion, 96.98 ± 0.87% with the strong
# one; no BN 97.69 ± 0.30% and 97.41 ± 0.63%. In 3 epochs distortion helps neither; it
# costs BN more (-1.13 ± 1.00 points against -0.28 ± 0.34), as the claim predicts, but
# within the spread of 3 seeds.
#
# Run it (`--help` lists every option; `tfbn experiment augmentation` runs the same):
#
#     python tutorials/experiment_augmentation.py      # about 7 minutes on 2 CPU cores
#     python tutorials/experiment_augmentation.py --strengths none,light,strong  # 11 minutes
#     tfbn experiment augmentation --train-size 60000 --epochs 10 --seeds 5 \
#         --strengths none,light,strong --bn-momentum 0.99   # the full setting, hours

# %% [markdown]
# ## Setup

# %%
from tfbn import BatchNorm, cli, models  # first: tfbn quiets TensorFlow's start-up logs
import keras
from keras import layers

from tfbn.experiments import augmentation as experiment

# %% [markdown]
# ## The data
#
# The experiment draws `--train-size` training digits (the same ones for every network)
# and gives each network a tf.data pipeline of batches of 100, as 28x28x1 images in
# [0, 1], that reshuffles every epoch, seeded, so that all networks of a seed see the same
# batches. The distortion is not in the pipeline: it is part of the model.

# %% [markdown]
# ## The distortion
#
# Keras's preprocessing layers, as the model's first layers: `RandomTranslation` shifts
# each image by up to a fraction of its height and width, `RandomRotation` turns it by up
# to a fraction of a full turn, each image of a batch by its own random amount. They act
# only in training: at inference (`model.evaluate`, `model.predict`, `training=False`)
# they pass the images through unchanged, so the test digits are never distorted.
# `fill_mode="constant"` fills the pixels shifted or turned in from outside the image with
# 0, MNIST's black background (the default, "reflect", would mirror strokes into the
# border). Each layer has its own seed, so that its random numbers are the same for every
# network of a seed, and the light and the strong distortion draw the same numbers,
# scaled.


# %%
IMAGE_SIZE = 28


def distortion(shift_pixels: float, rotation_degrees: float, seed: int) -> keras.Sequential:
    shift = shift_pixels / IMAGE_SIZE
    return keras.Sequential([
        # Two random streams per seed, 2 seed and 2 seed + 1: no other seed uses them.
        layers.RandomTranslation(shift, shift, fill_mode="constant", seed=2 * seed,
                                 name="shift"),
        layers.RandomRotation(rotation_degrees / 360, fill_mode="constant",
                              seed=2 * seed + 1, name="rotation"),
    ], name="distortion")


# %% [markdown]
# ## The model
#
# Step 4.2's network: three convolutions (24 6x6 filters, 48 5x5 of stride 2, 64 4x4 of
# stride 2), a dense layer of 200 with dropout 0.25, each weighted sum followed by
# `BatchNorm(scale=False)` and a ReLU. Without BN (`bn=False`) each BN layer is
# `models.Bias`, the bias BN's offset replaced, and the network is otherwise the same. No
# distortion (`shift_pixels = rotation_degrees = 0`) means no distortion layers. The BN
# layers' moving averages use `--bn-momentum` 0.9: a run of 300 steps is too short for
# Keras's 0.99 (the module docstring says why).


# %%
def build_model(bn: bool, shift_pixels: float, rotation_degrees: float, seed: int,
                bn_momentum: float = 0.9) -> keras.Model:
    def normalization(name):
        if bn:
            return BatchNorm(scale=False, momentum=bn_momentum, name=name)
        return models.Bias(name=name)  # no BN: the bias it replaced

    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = inputs
    if shift_pixels or rotation_degrees:
        x = distortion(shift_pixels, rotation_degrees, seed)(x)
    x = layers.Conv2D(24, 6, strides=1, padding="same", use_bias=False, name="conv1")(x)
    x = normalization("conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.Conv2D(48, 5, strides=2, padding="same", use_bias=False, name="conv2")(x)
    x = normalization("conv2_bn")(x)
    x = layers.Activation("relu", name="conv2_relu")(x)
    x = layers.Conv2D(64, 4, strides=2, padding="same", use_bias=False, name="conv3")(x)
    x = normalization("conv3_bn")(x)
    x = layers.Activation("relu", name="conv3_relu")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(200, use_bias=False, name="dense")(x)
    x = normalization("dense_bn")(x)
    x = layers.Activation("relu", name="dense_relu")(x)
    x = layers.Dropout(0.25, name="dense_dropout")(x)
    outputs = layers.Dense(10, activation="softmax", name="softmax")(x)
    return keras.Model(inputs, outputs, name="conv_bn" if bn else "conv_no_bn")


# %% [markdown]
# ## The optimizer
#
# Adam at a constant `--learning-rate` (0.003), the same for both networks: a rate the
# network without BN trains at too (BN alone would take a higher one), so that the two
# differ in BN only.


# %%
def make_optimizer(learning_rate: float) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(learning_rate)


# %% [markdown]
# ## Train and compare
#
# `experiment.run` trains both networks at every strength for every seed with
# `model.fit`, evaluates the 10,000 test digits (undistorted), prints each one's mean ±
# sd, each strength's gain over no distortion and the test set's noise floor, and writes
# `figure.png` and `metrics.json` into `--outdir`.

# %%
CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("augmentation", CONFIG))

# %% [markdown]
# # Experiment: does batch norm break with small training batches?
#
# **The question.** BN normalizes with the statistics of the training batch. With a batch
# of 2, a dense unit's mean and variance are those of two numbers, and two numbers
# normalized are always -1 and +1: the layer passes on only which of the two images is
# the larger. At test time it normalizes with its moving averages instead, so training
# and inference compute different functions (keras#7177, tensorflow#33031). Batch
# renormalization (Ioffe 2017) corrects each batch's statistics towards the moving ones;
# group and layer normalization (Wu and He 2018; Ba et al. 2016) take their statistics
# from each image alone and do not care about the batch. How much does each lose at small
# batches, next to no normalization at all?
#
# **The experiment.** A conv net a third as wide as step 4.2's, with each of these
# normalizers after each weighted layer: BN, BN with renorm, group norm, layer norm and
# none. Each is trained at batch sizes 2, 8, 32 and 128 on the same images for the same
# epochs, so every run sees as many images; the learning rate grows with the square root
# of the batch size. For a seed, every run starts from the same kernels and the runs at a
# batch size see the same batches; 3 seeds. The test accuracy is measured on all test
# digits in inference mode (BN with its moving statistics).
#
# **Result** (the default run: 3,000 training images, 2 epochs, seeds 0-2; the mean ± sd
# over the seeds; `docs/experiments.md` has the figure and the full table): at batch 2, BN 83.47 ± 2.05%
# test accuracy against 95.29 ± 0.42% without normalization; renorm 87.73 ± 0.73%; group
# norm 95.65 ± 0.89% and layer norm 95.30 ± 1.03% are unaffected. From batch 8 BN is level
# with no normalization, from 32 ahead of it (95.63 ± 0.37% against 93.62 ± 0.97%), and
# renorm is best at 32 (96.40 ± 0.07%).
#
# Run it (`--help` lists every option; `tfbn experiment batch_size` runs the same):
#
#     python tutorials/experiment_batch_size.py      # about 6 minutes on 2 CPU cores
#     tfbn experiment batch_size --train-size 10000 --epochs 3 \
#         --batch-sizes 2,4,8,16,32,128 \
#         --normalizers batch_norm,renorm,ghost_batch_norm,group_norm,layer_norm,none
#
# The second is the full setting, every batch size and normalizer, 30,000 images per run:
# about 35 minutes, most of it in the runs at batch 2, whose steps cost nearly as much
# time as steps of 30 images.

# %% [markdown]
# ## Setup

# %%
from tfbn import BatchNorm, cli  # first: tfbn quiets TensorFlow's start-up logs
import keras
import tensorflow as tf
from keras import layers

from tfbn.experiments import batch_size as experiment

# %% [markdown]
# ## The data
#
# The experiment draws `--train-size` training digits, the same for every run, and gives
# each run a tf.data pipeline of batches that reshuffles every epoch, seeded, so that all
# normalizers at a batch size see the same batches for a seed. An epoch ends with a
# smaller batch when the batch size does not divide the training set; `full_batches`
# drops it, so that every step has exactly `batch_size` images (a last batch of one
# would give BN nothing to normalize, and ghost batches need whole groups), and tells
# Keras how many batches are left.


# %%
def full_batches(dataset, batch_size: int, train_size: int):
    dataset = dataset.filter(lambda images, labels: tf.shape(images)[0] == batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(train_size // batch_size))


# %% [markdown]
# ## The model
#
# Three convolutions (8, 16 and 32 channels, kernels 6, 5 and 4, strides 1, 2 and 2) and
# a dense layer of 100, each followed by the normalizer and a ReLU, then the softmax.
# `normalization` makes the one layer that differs:
#
# - `batch_norm`: `BatchNorm`, statistics over the batch (and, after a convolution, over
#   every position: 2 x 28 x 28 = 1,568 values per channel at batch 2 in the first layer).
#   In the dense layer a batch of 2 gives each unit 2 values: normalized, they are -1 and
#   +1; and the moving variance, an average of biased batch variances, comes out at
#   (n - 1) / n = 1/2 of the population's (keras#8982), so inference sees a scale
#   training never did.
# - `renorm`: `BatchNorm(renorm=True)`. Training normalizes with the batch's statistics,
#   then multiplies by `r = batch sd / moving sd` and adds `d = (batch mean - moving
#   mean) / moving sd`, both constants for the gradient: the forward pass is then the
#   normalization with the moving statistics, the one inference uses. `r` is clipped to
#   [1/3, 3] and `d` to [-5, 5], the paper's final limits. Keras's layer takes fixed
#   limits, so there is no warm-up from plain BN as in the paper: until the moving
#   statistics have left their initial 0 and 1, `r` and `d` often sit at the limits.
# - `ghost_batch_norm`: `BatchNorm(virtual_batch_size=ghost_batch_size)`, each group of
#   that many images of a larger batch normalized with its own statistics. It only
#   applies to batches larger than the group, so the experiment trains it only there.
# - `group_norm`: `layers.GroupNormalization(groups=4)`, statistics of each image over 4
#   groups of channels (and every position): 2 channels per group in the first
#   convolution, 25 units per group in the dense layer.
# - `layer_norm`: `layers.LayerNormalization`, statistics of each image over all of a
#   layer's outputs (every position and channel: `axis=(-3, -2, -1)` after a
#   convolution). Its offset is per position and channel, GN's per channel.
# - `none`: the conv and dense layers keep their bias instead.
#
# No normalizer keeps a scale (`scale=False`): the ReLU and the next weighted layer
# absorb it, as in step 4.2. `momentum` is the momentum of BN's moving averages (and of
# renorm's); `bn_momentum` sets it so that the averages span the same number of images
# at every batch size: at batch 128 a momentum of 0.99 would still remember its initial
# 0 and 1 after the 46 steps of the default run, and at batch 2 it would average only
# 200 images.

# %%
GROUPS = 4
RENORM_CLIPPING = {"rmax": 3.0, "rmin": 1 / 3, "dmax": 5.0}


def bn_momentum(batch_size: int, moving_average_images: int) -> float:
    return 1 - batch_size / moving_average_images


def normalization(normalizer: str, momentum: float, name: str, feature_map: bool = True,
                  ghost_batch_size: int = 16):
    if normalizer == "batch_norm":
        return BatchNorm(momentum=momentum, scale=False, name=name)
    if normalizer == "renorm":
        return BatchNorm(momentum=momentum, scale=False, renorm=True,
                         renorm_clipping=RENORM_CLIPPING, renorm_momentum=momentum,
                         name=name)
    if normalizer == "ghost_batch_norm":
        return BatchNorm(momentum=momentum, scale=False, virtual_batch_size=ghost_batch_size,
                         name=name)
    if normalizer == "group_norm":
        return layers.GroupNormalization(groups=GROUPS, scale=False, name=name)
    if normalizer == "layer_norm":
        return layers.LayerNormalization(axis=(-3, -2, -1) if feature_map else -1,
                                         scale=False, name=name)
    raise ValueError(f"unknown normalizer {normalizer!r}")


def build_model(normalizer: str, momentum: float = 0.99,
                ghost_batch_size: int = 16) -> keras.Model:
    use_bias = normalizer == "none"
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = inputs
    for index, (channels, kernel, stride) in enumerate(((8, 6, 1), (16, 5, 2), (32, 4, 2)),
                                                       start=1):
        x = layers.Conv2D(channels, kernel, strides=stride, padding="same",
                          use_bias=use_bias, name=f"conv{index}")(x)
        if normalizer != "none":
            x = normalization(normalizer, momentum, f"conv{index}_norm",
                              ghost_batch_size=ghost_batch_size)(x)
        x = layers.Activation("relu", name=f"conv{index}_relu")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(100, use_bias=use_bias, name="dense")(x)
    if normalizer != "none":
        x = normalization(normalizer, momentum, "dense_norm", feature_map=False,
                          ghost_batch_size=ghost_batch_size)(x)
    x = layers.Activation("relu", name="dense_relu")(x)
    outputs = layers.Dense(10, activation="softmax", name="softmax")(x)
    return keras.Model(inputs, outputs, name=f"conv_network_{normalizer}")


# %% [markdown]
# ## The optimizer
#
# Adam, at a rate that grows with the square root of the batch size: `--learning-rate`
# (0.002) at batch 32, 0.0005 at batch 2, 0.004 at batch 128. Every run sees as many
# images, so a batch of 2 takes 64 times as many steps as a batch of 128, each from a
# gradient 8 times noisier (its standard deviation). Malladi et al. (2022) derive the
# square-root rule for Adam, as the linear rule is for SGD: it keeps both the progress
# per epoch and the noise the weights accumulate in it about the same. One constant rate
# for all sizes (`--learning-rate-scaling constant`) would either make the batch-2 runs
# noisier or leave the batch-128 runs, 46 steps long, far from trained. At a batch size,
# every normalizer gets the same rate.


# %%
REFERENCE_BATCH_SIZE = 32


def scaled_learning_rate(learning_rate: float, batch_size: int, scaling: str) -> float:
    if scaling == "constant":
        return learning_rate
    return learning_rate * (batch_size / REFERENCE_BATCH_SIZE) ** 0.5


def make_optimizer(learning_rate: float) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(learning_rate)


# %% [markdown]
# ## Train and compare
#
# `experiment.run` trains every normalizer at every batch size for every seed with
# `model.fit`, evaluates the 10,000 test digits, prints each one's mean ± sd and the test
# set's noise floor, and writes `figure.png` and `metrics.json` into `--outdir`.

# %%
CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("batch_size", CONFIG))

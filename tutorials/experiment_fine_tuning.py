# %% [markdown]
# # Experiment: fine-tuning a pretrained network that has batch norm
#
# **The question.** The most reported BN pitfall (keras#4762, #6570, #9214, #9522, #9965):
# take a pretrained network, freeze its body with `layer.trainable = False`, put a new head
# on it and train the head on a few labelled images. What does BN do in the frozen body,
# and does it matter? The answer changed with the Keras version:
#
# - **Keras 3** (and tf.keras since TF 2.0): `trainable = False` on a BN layer puts it in
#   inference mode, even inside `fit`. It normalizes with its pretrained moving statistics
#   and updates neither them nor its `gamma` and `beta`.
# - **Keras 2.0** (keras#4762, #6570): `trainable = False` froze `gamma` and `beta` only.
#   In `fit`, BN still normalized with the statistics of each batch and still updated its
#   moving statistics.
# - **Later Keras 2** (keras#9214, #9522, #9965, 2018): batch statistics in `fit`, but the
#   moving statistics frozen too. The head then trains on features normalized by batch
#   statistics of the new data, and at test time sees features normalized by the old
#   data's moving statistics: "high training accuracy, bad validation accuracy".
#
# **The experiment.** Step 4.2's conv network is pretrained on the digits 0-4. A new
# 5-way head for the digits 5-9 goes on its body, and is fine-tuned on 200 labelled
# images of 5-9 in batches of 20, the body frozen five ways: Keras 3's `trainable = False`
# (`frozen`); the convolutions frozen but BN left to train (`bn_training`); the two Keras 2
# behaviours (`keras2`, `keras2_fixed_stats`); and nothing frozen (`everything`). For a
# seed, every variant starts from the same pretrained weights and the same new head, and
# sees the same batches; 3 seeds. The score is the accuracy on every test digit 5-9.
#
# **Result** (the default run: pretraining on 10,000 images of 0-4 for 2 epochs,
# fine-tuning on 200 images of 5-9 for 10 epochs, seeds 0-2; the mean ± sd over the seeds;
# `docs/experiments.md` has the figure and the full table): with the body frozen, what BN
# does makes no difference beyond the seeds' spread: Keras 3's `trainable=False` 66.80 ±
# 2.62% on the 4,861 test digits 5-9, BN training 66.89 ± 2.72%, Keras 2.0's freeze 66.14
# ± 2.84%, later Keras 2's 63.10 ± 4.48% (the lowest, within the noise of 3 seeds).
# Fine-tuning everything: 94.86 ± 0.35%.
#
# Run it (`--help` lists every option; `tfbn experiment fine_tuning` runs the same):
#
#     python tutorials/experiment_fine_tuning.py     # about 3 minutes on 2 CPU cores
#     # the full setting:
#     tfbn experiment fine_tuning --pretrain-size 30000 --pretrain-epochs 5 --seeds 5

# %% [markdown]
# ## Setup

# %%
from tfbn import cli, models  # first: tfbn quiets TensorFlow's start-up logs
import keras
import numpy as np
from keras import layers

from tfbn.experiments import fine_tuning as experiment
from tfbn.layer import BATCH_NORM_TYPES

# %% [markdown]
# ## The data
#
# Two halves of MNIST: the digits 0-4 to pretrain on, the digits 5-9 to fine-tune on. Each
# half is relabelled 0-4 (a 5 becomes class 0), so that both heads have five classes. The
# experiment draws `--pretrain-size` training images of 0-4 and `--fine-tune-size` of 5-9
# for each seed, and gives each network a seeded tf.data pipeline that reshuffles every
# epoch, so that every variant of a seed sees the same batches. The score uses every test
# digit 5-9 (4,861 of the 10,000).


# %%
def select_digits(images: np.ndarray, labels: np.ndarray, first_digit: int):
    """The images of the digits first_digit..first_digit + 4, labelled 0-4."""
    chosen = (labels >= first_digit) & (labels < first_digit + 5)
    return images[chosen], (labels[chosen] - first_digit).astype(labels.dtype)


# %% [markdown]
# ## The model
#
# The body is step 4.2's network up to its 200 features: three convolutions and a dense
# layer, each without a bias, followed by `BatchNorm(scale=False)` and a ReLU (BN's offset
# `beta` replaces the bias; with no `gamma`, "gamma and beta" below means `beta`), and the
# dense layer's dropout. The head is a new `Dense(5)` and a softmax. The body is a model of
# its own, so that its pretrained weights go from one network to the next with
# `get_weights` / `set_weights`.


# %%
def build_body(bn: str = "custom", bn_momentum: float = 0.9) -> keras.Model:
    BatchNorm = models.batch_norm_type(bn)  # tfbn.BatchNorm or keras's own
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = layers.Conv2D(24, 6, strides=1, padding="same", use_bias=False, name="conv1")(inputs)
    x = BatchNorm(scale=False, momentum=bn_momentum, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.Conv2D(48, 5, strides=2, padding="same", use_bias=False, name="conv2")(x)
    x = BatchNorm(scale=False, momentum=bn_momentum, name="conv2_bn")(x)
    x = layers.Activation("relu", name="conv2_relu")(x)
    x = layers.Conv2D(64, 4, strides=2, padding="same", use_bias=False, name="conv3")(x)
    x = BatchNorm(scale=False, momentum=bn_momentum, name="conv3_bn")(x)
    x = layers.Activation("relu", name="conv3_relu")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(200, use_bias=False, name="dense")(x)
    x = BatchNorm(scale=False, momentum=bn_momentum, name="dense_bn")(x)
    x = layers.Activation("relu", name="dense_relu")(x)
    features = layers.Dropout(0.25, name="dense_dropout")(x)
    return keras.Model(inputs, features, name="body")


# %% [markdown]
# `build_model(variant, body_weights)` builds a body, gives it the pretrained weights,
# freezes it as `variant` says, and puts a new head on it. Pretraining is
# `build_model("everything")`. The five ways to freeze the body:
#
# - `frozen`: `layer.trainable = False` on every layer of the body. On a BN layer, Keras 3
#   (and `tfbn.BatchNorm`) read it as "inference mode": `fit` calls the layer with
#   `training=True`, but it normalizes with its moving statistics and changes nothing.
# - `bn_training`: the convolutions and the dense layer frozen, the BN layers trainable:
#   in `fit` they normalize with the batch's statistics, move their moving statistics
#   towards them and train `beta`.
# - `keras2`: Keras 2.0's frozen BN. In Keras 3 a non-trainable BN layer is in inference
#   mode, so the layer stays trainable (training mode, batch statistics, moving
#   statistics updated) and its `gamma` and `beta` variables are marked non-trainable one
#   by one (`variable.trainable = False`): the optimizer never sees them.
# - `keras2_fixed_stats`: later Keras 2's frozen BN: as `keras2`, with momentum 1. The
#   update `moving = momentum * moving + (1 - momentum) * batch` then keeps the moving
#   statistics exactly, while the layer still normalizes with the batch's statistics.
# - `everything`: nothing frozen.


# %%
def build_model(variant: str, body_weights: list | None = None, *, bn: str = "custom",
                bn_momentum: float = 0.9) -> keras.Model:
    body = build_body(bn, 1.0 if variant == "keras2_fixed_stats" else bn_momentum)
    if body_weights is not None:
        body.set_weights(body_weights)
    for layer in body.layers:
        is_bn = isinstance(layer, BATCH_NORM_TYPES)
        if variant == "frozen":
            layer.trainable = False  # BN too: inference mode, even in fit
        elif variant == "bn_training":
            layer.trainable = is_bn
        elif variant in ("keras2", "keras2_fixed_stats"):
            layer.trainable = is_bn  # BN trainable, so it normalizes with batch statistics
            if is_bn:
                for weight in (layer.gamma, layer.beta):
                    if weight is not None:
                        weight.trainable = False  # ... but its scale and offset stay
        elif variant != "everything":
            raise ValueError(f"variant must be one of {', '.join(experiment.VARIANTS)}, "
                             f"got {variant!r}")
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    logits = layers.Dense(5, name="head")(body(inputs))
    # The softmax stays float32, so that mixed precision leaves the loss exact.
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(logits)
    return keras.Model(inputs, outputs, name=f"fine_tuning_{variant}")


# %% [markdown]
# ## The optimizer
#
# Adam at a constant rate: `--learning-rate` (0.003) for pretraining, and
# `--fine-tune-learning-rate` (0.001) for fine-tuning, the same for every variant. A new
# optimizer for every network, compiled after the freezing: `fit` builds its training
# step from what is trainable at compile time.


# %%
def make_optimizer(learning_rate: float) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(learning_rate)


# %% [markdown]
# ## Train and compare
#
# `experiment.run` pretrains one network per seed with `model.fit`, fine-tunes every
# variant from its body's weights, evaluates every test digit 5-9, compares the body's BN
# layers before and after fine-tuning (moving means and `beta`), prints each variant's
# mean ± sd and the test set's noise floor, and writes `figure.png` and `metrics.json`
# into `--outdir`.

# %%
CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("fine_tuning", CONFIG))

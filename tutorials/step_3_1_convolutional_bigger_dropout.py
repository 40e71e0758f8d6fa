# %% [markdown]
# # Codelab step 3.1: bigger convolutions and dropout
#
# **One idea from step 3.0:** more filters, and dropout on the dense layer, which the
# bigger network needs.
#
# **Result** (seed 0, a 2-core CPU; the README's results table has the command and
# time): 99.27% test accuracy at the best of 17 epochs, 99.19% after the last; the
# codelab: 99.3%.
#
# Run it (`--help` lists every option; `tfbn run 3.1` runs this same file):
#
#     python tutorials/step_3_1_convolutional_bigger_dropout.py --logdir runs/3.1
#     tfbn run 3.1 --logdir runs/3.1

# %% tags=["active-ipynb"]
# # In a fresh Jupyter or Colab: install tfbn, from this repository's checkout (the
# # notebook's parent folder) or from TFBN_SOURCE (a path or a git URL of the repository).
# import importlib.util, os, subprocess, sys
# if importlib.util.find_spec("tfbn") is None:
#     source = os.environ.get("TFBN_SOURCE", "..")
#     subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])

# %% [markdown]
# ## Setup

# %%
from tfbn import cli, data, training  # first: tfbn quiets TensorFlow's start-up logs
import keras
from keras import layers

from tfbn.config import RunConfig
from tfbn.schedules import DecayToFloor

STEP = "3.1"
EPOCHS = 17  # the codelab's 10,000 iterations of batch 100 (10,000 x 100 / 60,000)

# %% [markdown]
# ## The data
#
# `data.mnist_datasets` gives the 60,000 training and 10,000 test digits as tf.data
# pipelines: pixels scaled to [0, 1], each image kept as 28x28x1 for the convolutions, the
# training set in a new order every epoch, batches of 100.

# %% [markdown]
# ## The model
#
# 6x6 with 6 filters, 5x5 with 12 (stride 2), 4x4 with 24 (stride 2), dense 200 with ReLU,
# then `Dropout(0.25)` before the softmax.


# %%
def build_model() -> keras.Model:
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = layers.Conv2D(6, 6, strides=1, padding="same", name="conv1")(inputs)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.Conv2D(12, 5, strides=2, padding="same", name="conv2")(x)
    x = layers.Activation("relu", name="conv2_relu")(x)
    x = layers.Conv2D(24, 4, strides=2, padding="same", name="conv3")(x)
    x = layers.Activation("relu", name="conv3_relu")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(200, name="dense")(x)
    x = layers.Activation("relu", name="dense_relu")(x)
    x = layers.Dropout(0.25, name="dense_dropout")(x)
    logits = layers.Dense(10, name="logits")(x)
    # The softmax stays float32, so that mixed precision leaves the loss exact.
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(logits)
    return keras.Model(inputs, outputs, name="conv_network")


# %% [markdown]
# ## The optimizer and the learning rate
#
# Adam, with the codelab's decay from 0.003 to 0.0001: `0.0001 + 0.003 e^(-t/2000)` at
# training step t. Late in training the high rate only shakes the weights around a
# minimum: the decay calms the noisy test accuracy curve.


# %%
LEARNING_RATE = DecayToFloor(peak=0.003, floor=0.0001, decay_steps=2000)


def make_optimizer(learning_rate_scale: float = 1.0) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(LEARNING_RATE.scaled(learning_rate_scale))


# %% [markdown]
# ## Train and evaluate
#
# `training.Run` is the bookkeeping every step shares: it seeds every random generator
# (`--seed`), picks the device, the `tf.distribute` strategy and the precision (its `with`
# block is their scope), and opens the run directory (`--logdir`): a new run, or the same
# run resumed. `run.order` draws each epoch's order of the training digits from (seed,
# epoch) alone. `run.callbacks` are TensorBoard's, the codelab's dashboard and a checkpoint
# after every epoch: a killed run, started again, resumes where it stopped and ends with the
# numbers it would have had. `run.finish` prints and saves the test metrics. After every
# epoch `fit` evaluates the 10,000 test digits.


# %%
def main(config: RunConfig = RunConfig(), datasets=None) -> dict:
    """Trains this step as `config` says; `datasets` replaces MNIST (tests pass tiny arrays)."""
    with training.Run(STEP, config, arrays=datasets) as run:
        train_data, test_data = data.mnist_datasets(
            config.batch_size, flat=False, order=run.order, arrays=run.arrays)
        model = build_model()
        model.compile(optimizer=make_optimizer(config.learning_rate_scale),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=config.xla)
        model.fit(train_data, validation_data=test_data, epochs=config.epochs or EPOCHS,
                  steps_per_epoch=config.steps_per_epoch, callbacks=run.callbacks(model),
                  verbose=config.verbose)
        return run.finish(model)


# %%
if __name__ == "__main__":
    cli.run_lesson(main, STEP)

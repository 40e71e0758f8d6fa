# %% [markdown]
# # Codelab step 1.0: softmax regression
#
# The simplest classifier: each digit class is a weighted sum of the 784 pixels, and a
# softmax turns the ten sums into probabilities. It is trained by plain gradient descent
# on the cross-entropy.
#
# **Result** (seed 0, a 2-core CPU; the README's results table has the command and
# time): 92.45% test accuracy at the best of 17 epochs, 92.41% after the last; the
# codelab: 92.7%.
#
# Run it (`--help` lists every option; `tfbn run 1.0` runs this same file):
#
#     python tutorials/step_1_0_softmax.py --logdir runs/1.0
#     tfbn run 1.0 --logdir runs/1.0

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

STEP = "1.0"
EPOCHS = 17  # the codelab's 10,000 iterations of batch 100 (10,000 x 100 / 60,000)

# %% [markdown]
# ## The data
#
# `data.mnist_datasets` gives the 60,000 training and 10,000 test digits as tf.data
# pipelines: pixels scaled to [0, 1], each image flattened to a vector of 784 (this network
# sees no 2D structure), the training set in a new order every epoch, batches of 100.

# %% [markdown]
# ## The model
#
# One dense layer from 784 pixels to 10 classes: `Dense(10)`, then the softmax.


# %%
def build_model() -> keras.Model:
    inputs = keras.Input(shape=(784,), name="pixels")
    x = inputs
    logits = layers.Dense(10, name="logits")(x)
    # The softmax stays float32, so that mixed precision leaves the loss exact.
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(logits)
    return keras.Model(inputs, outputs, name="softmax_regression")


# %% [markdown]
# ## The optimizer and the learning rate
#
# Plain gradient descent. The codelab sums the cross-entropy over a batch of 100 and
# uses rate 0.005; Keras averages it over the batch, so the same update takes 100 x 0.005.


# %%
LEARNING_RATE = 0.5


def make_optimizer(learning_rate_scale: float = 1.0) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(LEARNING_RATE * learning_rate_scale)


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
            config.batch_size, flat=True, order=run.order, arrays=run.arrays)
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

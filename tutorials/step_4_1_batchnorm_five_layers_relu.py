# %% [markdown]
# # Codelab step 4.1: batch norm before each ReLU
#
# **One idea from step 4.0:** ReLU instead of sigmoid, so BN keeps only its offset.
#
# **Result** (seed 0, a 2-core CPU; the README's results table has the command and
# time): 98.63% test accuracy at the best of 17 epochs, 98.61% after the last; the
# codelab: 98.5%.
#
# Run it (`--help` lists every option; `tfbn run 4.1` runs this same file):
#
#     python tutorials/step_4_1_batchnorm_five_layers_relu.py --logdir runs/4.1
#     tfbn run 4.1 --logdir runs/4.1
#
# `--bn keras` trains the same network with Keras's built-in layer, `--bn none` without
# batch norm (each BN layer then becomes the plain bias it replaced).

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
from tfbn import cli, data, models, training  # first: tfbn quiets TensorFlow's start-up logs
import keras
from keras import layers

from tfbn.config import RunConfig
from tfbn.schedules import DecayToFloor

STEP = "4.1"
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
# The same network with ReLU, and `scale=False`: ReLU is scale invariant
# (`relu(a x) = a relu(x)` for a > 0), and the next layer's weights absorb any scale, so a
# `gamma` would only be a redundant weight. BN keeps its offset `beta`, where the bias was.


# %%
def build_model(bn: str = "custom") -> keras.Model:
    BatchNorm = models.batch_norm_type(bn)  # tfbn.BatchNorm, keras's own, or a bias
    inputs = keras.Input(shape=(784,), name="pixels")
    x = inputs
    for index, units in enumerate((200, 100, 60, 30), start=1):
        x = layers.Dense(units, use_bias=False, name=f"dense{index}")(x)
        x = BatchNorm(scale=False, name=f"dense{index}_bn")(x)
        x = layers.Activation("relu", name=f"dense{index}_relu")(x)
    logits = layers.Dense(10, name="logits")(x)
    # The softmax stays float32, so that mixed precision leaves the loss exact.
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(logits)
    return keras.Model(inputs, outputs, name="dense_network")


# %% [markdown]
# ## The optimizer and the learning rate
#
# Ten times step 2.1's rate, `0.0001 + 0.03 e^(-t/1000)`: batch norm keeps every
# layer's input centred and scaled whatever the weights do, so a much higher rate
# no longer throws the sigmoids into saturation. That is the speed BN buys.


# %%
LEARNING_RATE = DecayToFloor(peak=0.03, floor=0.0001, decay_steps=1000)


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
            config.batch_size, flat=True, order=run.order, arrays=run.arrays)
        model = build_model(run.bn)
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

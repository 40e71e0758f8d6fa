# %% [markdown]
# # Codelab step 4.2: batch norm on the convolutional network
#
# **One idea from step 3.1:** batch normalization after every convolution and the dense
# layer, on a bigger network, with the higher learning rate BN allows.
#
# **Result** (seed 0, a 2-core CPU; the README's results table has the command and
# time): 99.56% test accuracy at the best of 17 epochs, 99.54% after the last; the
# codelab: 99.5%.
#
# Run it (`--help` lists every option; `tfbn run 4.2` runs this same file):
#
#     python tutorials/step_4_2_batchnorm_convolutional.py --logdir runs/4.2
#     tfbn run 4.2 --logdir runs/4.2
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

STEP = "4.2"
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
# Step 3.1's network, wider (24, 48 and 64 filters), with `BatchNorm(scale=False)`
# between each weighted sum and its ReLU, and no biases before BN (its offset `beta`
# replaces them). On a convolution's output BN keeps one mean and one variance per channel,
# computed over the batch and every position (N, H and W): a channel is one feature,
# whatever the pixel. Dropout stays on the dense layer, after its ReLU.


# %%
def build_model(bn: str = "custom") -> keras.Model:
    BatchNorm = models.batch_norm_type(bn)  # tfbn.BatchNorm, keras's own, or a bias
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = layers.Conv2D(24, 6, strides=1, padding="same", use_bias=False, name="conv1")(inputs)
    x = BatchNorm(scale=False, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.Conv2D(48, 5, strides=2, padding="same", use_bias=False, name="conv2")(x)
    x = BatchNorm(scale=False, name="conv2_bn")(x)
    x = layers.Activation("relu", name="conv2_relu")(x)
    x = layers.Conv2D(64, 4, strides=2, padding="same", use_bias=False, name="conv3")(x)
    x = BatchNorm(scale=False, name="conv3_bn")(x)
    x = layers.Activation("relu", name="conv3_relu")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(200, use_bias=False, name="dense")(x)
    x = BatchNorm(scale=False, name="dense_bn")(x)
    x = layers.Activation("relu", name="dense_relu")(x)
    x = layers.Dropout(0.25, name="dense_dropout")(x)
    logits = layers.Dense(10, name="logits")(x)
    # The softmax stays float32, so that mixed precision leaves the loss exact.
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(logits)
    return keras.Model(inputs, outputs, name="conv_network")


# %% [markdown]
# ## The optimizer and the learning rate
#
# Adam with `0.0001 + 0.02 e^(-t/1600)`: almost seven times step 3.1's peak rate.


# %%
LEARNING_RATE = DecayToFloor(peak=0.02, floor=0.0001, decay_steps=1600)


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

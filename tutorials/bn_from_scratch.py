# %% [markdown]
# # Batch normalization from scratch
#
# **The whole of BN in one function of `tf.nn.moments`, a small Keras layer around it, and
# the proof that it computes what `keras.layers.BatchNormalization` computes.**
#
# In training, BN normalizes each feature with the mean and variance of the batch, then
# scales and shifts it with two learnt weights: `gamma * (x - mean) / sqrt(variance +
# epsilon) + beta`. It also keeps moving averages of the mean and variance; at inference,
# when there may be a single image and no batch to speak of, it uses those instead.
#
# Run it: `python tutorials/bn_from_scratch.py` (about a minute on a CPU). It prints the
# largest differences from the built-in layer, then trains a small network with each.

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
import tfbn  # first: tfbn quiets TensorFlow's start-up logs
import keras
import numpy as np
import tensorflow as tf

from tfbn import data

# %% [markdown]
# ## The maths, as one function
#
# The statistics are over every axis but the last: axis 0 (the batch) for a dense layer's
# output `[N, features]`, and N, H and W for a convolution's `[N, H, W, channels]`, one mean
# and one variance per channel. The variance is the biased one (divided by n), as in Keras.
# The moving averages follow Keras's convention: `momentum` weights the *old* value.


# %%
def batch_norm(x, gamma, beta, moving_mean, moving_variance, *, epsilon, momentum,
               training):
    """Returns the normalized `x` and the new moving mean and variance."""
    if training:
        axes = list(range(len(x.shape) - 1))  # all but the feature axis
        mean, variance = tf.nn.moments(x, axes)
        moving_mean = momentum * moving_mean + (1 - momentum) * mean
        moving_variance = momentum * moving_variance + (1 - momentum) * variance
    else:
        mean, variance = moving_mean, moving_variance
    x_hat = (x - mean) / tf.sqrt(variance + epsilon)
    return gamma * x_hat + beta, moving_mean, moving_variance


# %% [markdown]
# ## The layer: weights and bookkeeping
#
# `gamma` and `beta` are trained; the moving statistics are weights too, but not trainable:
# only the layer itself changes them, in training. Keras passes `training=True` in `fit`
# and `False` in `predict` and `evaluate`.


# %%
class ScratchBatchNorm(keras.layers.Layer):
    def __init__(self, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.momentum, self.epsilon = momentum, epsilon

    def build(self, input_shape):
        shape = (input_shape[-1],)
        self.gamma = self.add_weight(shape=shape, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=shape, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=shape, initializer="zeros",
                                           trainable=False, name="moving_mean")
        self.moving_variance = self.add_weight(shape=shape, initializer="ones",
                                               trainable=False, name="moving_variance")

    def call(self, x, training=False):
        y, moving_mean, moving_variance = batch_norm(
            x, self.gamma, self.beta, self.moving_mean, self.moving_variance,
            epsilon=self.epsilon, momentum=self.momentum, training=bool(training))
        if training:
            self.moving_mean.assign(moving_mean)
            self.moving_variance.assign(moving_variance)
        return y


# %% [markdown]
# ## The proof: the same numbers as the built-in layer
#
# Three layers see the same batches: ours, Keras's `BatchNormalization` and
# `tfbn.BatchNorm(implementation="moments")`. For dense and convolutional inputs we compare
# the training outputs, the gradients (of the outputs weighted by random numbers) with
# respect to the input, `gamma` and `beta`, the moving statistics after three steps, and the inference outputs.
# Each difference is the largest |ours - theirs|, divided by the largest |theirs|: float32
# rounding is about 1e-7 of a value.


# %%
def largest_differences(shape, steps=3, seed=0):
    """{(quantity, "keras" or "tfbn"): largest relative difference from ours} over `steps`
    training batches of `shape`, then one inference batch."""
    rng = np.random.default_rng(seed)
    layers = {"ours": ScratchBatchNorm(), "keras": keras.layers.BatchNormalization(),
              "tfbn": tfbn.BatchNorm(implementation="moments")}
    differences = {}

    def compare(quantity, values):
        for name in ("keras", "tfbn"):
            gap = tf.reduce_max(tf.abs(values["ours"] - values[name]))
            relative = float(gap / tf.reduce_max(tf.abs(values[name])))
            differences[quantity, name] = max(differences.get((quantity, name), 0.0), relative)

    for _ in range(steps):
        x = tf.constant(3 + 2 * rng.standard_normal(shape), tf.float32)
        upstream = tf.constant(rng.standard_normal(shape), tf.float32)
        results = {}
        for name, layer in layers.items():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
            dx, dgamma, dbeta = tape.gradient(y, [x, layer.gamma, layer.beta], upstream)
            results[name] = {"training output": y, "input gradient": dx,
                             "gamma gradient": dgamma, "beta gradient": dbeta}
        for quantity in results["ours"]:
            compare(quantity, {name: result[quantity] for name, result in results.items()})
    for quantity in ("moving_mean", "moving_variance"):
        compare(quantity, {name: getattr(layer, quantity) for name, layer in layers.items()})
    x = tf.constant(3 + 2 * rng.standard_normal(shape), tf.float32)
    compare("inference output", {name: layer(x, training=False) for name, layer in layers.items()})
    return differences


# %% [markdown]
# ## A short training run with it
#
# Step 4.1's idea on a smaller network: a dense layer without bias, BN (ours, then Keras's,
# same seed and hyperparameters), ReLU, the softmax; one epoch of MNIST with Adam.


# %%
def train(batch_norm_layer, steps_per_epoch=None, datasets=None):
    """Test accuracy after one epoch (or `steps_per_epoch` batches) with that BN layer."""
    keras.utils.set_random_seed(0)
    train_data, test_data = data.mnist_datasets(100, flat=True, seed=0, arrays=datasets,
                                                repeat=steps_per_epoch is not None)
    model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(100, use_bias=False),
                              batch_norm_layer(), keras.layers.Activation("relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"],
                  loss="sparse_categorical_crossentropy")
    model.fit(train_data, steps_per_epoch=steps_per_epoch, verbose=0)
    return model.evaluate(test_data, verbose=0)[1]


# %%
def main(steps_per_epoch=None, datasets=None) -> dict:
    """Prints and returns the differences, per input shape, and the two test accuracies."""
    results = {}
    for shape in [(32, 8), (8, 6, 6, 4)]:
        print(f"inputs of shape {shape}: largest relative difference from ours")
        differences = largest_differences(shape)
        for quantity in dict.fromkeys(quantity for quantity, _ in differences):
            keras_gap, tfbn_gap = differences[quantity, "keras"], differences[quantity, "tfbn"]
            print(f"  {quantity:<16} keras {keras_gap:.1e}   tfbn {tfbn_gap:.1e}")
        results[shape] = differences
    for name, layer in [("ours", ScratchBatchNorm), ("keras", keras.layers.BatchNormalization)]:
        results[name] = train(layer, steps_per_epoch, datasets)
        print(f"test accuracy after one epoch with {name} BN: {results[name]:.4f}")
    return results


# %%
if __name__ == "__main__":
    main()

# %% [markdown]
# # Experiment: does BN help by reducing internal covariate shift?
#
# **The question.** The BN paper says that BN helps because it keeps the distribution of
# every layer's inputs still while the layers below it learn: it reduces "internal
# covariate shift". Santurkar, Tsipras, Ilyas and Madry (2018, "How does batch
# normalization help optimization?", section 2.1 and Figure 2) test that directly: they
# add noise right after every BN layer, with a non-zero mean and a non-unit variance that
# change at every training step, so that the layers' inputs shift more than in a network
# without BN at all. That "noisy BN" network still trains about as well as BN. Their
# explanation (section 3, Figure 4) is that BN makes the loss smoother: along the
# gradient the loss changes less and the gradient itself changes less, so the gradient
# predicts the next step better.
#
# **The experiment.** The codelab's five-layer ReLU network (784-200-100-60-30-10) three
# ways: without BN (a bias in each layer instead), with BN before each ReLU, and with BN
# followed by shifting noise (in training only). Plain SGD, as in the paper. For a seed,
# every variant starts from the same kernels and sees the same batches; 3 seeds. Every
# 50 steps, on a fixed batch of 500 training images, it measures how much the inputs of
# the fourth layer have moved since the last measurement, and three of Santurkar et al.'s
# smoothness measures along the gradient `g`: the range of the loss `L(w - eta g)` over
# the step sizes `eta`, the largest change of the gradient, `||grad L(w - eta g) -
# grad L(w)||`, and that change per unit of distance travelled (their "effective
# beta-smoothness").
#
# **Result** (the default run: all 60,000 training images, 1,500 steps of batch 100, SGD
# 0.1, noise strength 1, seeds 0-2; the mean ± sd over the seeds; `docs/experiments.md`
# has the figure): test accuracy without BN 96.24 ± 0.73%, BN 97.43 ± 0.07%, BN + noise
# 96.34 ± 0.01%. The noise moves dense4's inputs 5 times as much as without BN, and the
# network still trains as well as the plain one, but 1.1 points under BN. Along the
# gradient, the gradient changes 5 times less with BN than without it, 3.5 times less
# with BN + noise: BN's loss is smoother, shifting inputs or not.
#
# Run it (`--help` lists every option; `tfbn experiment noisy_bn` runs the same):
#
#     python tutorials/experiment_noisy_bn.py      # about 4 minutes on 2 shared CPU cores
#     tfbn experiment noisy_bn --steps 10000 --record-every 250 --seeds 5   # the full setting

# %% [markdown]
# ## Setup

# %%
from tfbn import BatchNorm, cli  # first: tfbn quiets TensorFlow's start-up logs
import keras
import tensorflow as tf
from keras import layers

from tfbn.experiments import noisy_bn as experiment
from tfbn.experiments.common import call_in_training_mode

# %% [markdown]
# ## The data
#
# The experiment gives each network a tf.data pipeline of batches of 100 that reshuffles
# every epoch, seeded, so that all variants of a seed see the same batches. This network
# takes each image as a vector of 784 pixels.


# %%
def flat(dataset):
    return dataset.map(lambda images, labels: (keras.ops.reshape(images, (-1, 784)), labels))


# %% [markdown]
# ## The noise
#
# Santurkar et al. perturb each activation after BN with noise of a non-zero mean and a
# non-unit variance, drawn from a distribution that changes at every step. Here each unit
# gets, at every training step, its own scale `s ~ U(1 - n/2, 1 + n/2)` and shift
# `m ~ U(-n, n)`, the same for every example of the batch: `x -> s x + m`. (Their noise is
# drawn for every example too, and its exact distribution is not copied here.) One draw
# per unit and step moves the whole distribution of that unit, which is the covariate
# shift itself, without adding a different noise to every example. Averaged over the draws the
# map is the identity (`E[s] = 1`, `E[m] = 0`), and at inference the layer is the identity:
# the network is evaluated as the average of the networks it was trained as, like dropout.
# The `SeedGenerator` makes the draws reproducible; its state is a variable of the layer
# (it advances at every call in training), so a measurement that restores the model's
# variables also replays the same draw.


# %%
class ShiftingNoise(layers.Layer):
    """In training, `x * s + m` per unit (last axis), with `s ~ U(1 - strength/2,
    1 + strength/2)` and `m ~ U(-strength, strength)` drawn afresh at every call and shared
    by the batch; the identity at inference. 0 < strength < 2 keeps `s` positive."""

    def __init__(self, strength: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.strength = strength
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training:
            return inputs
        units = (inputs.shape[-1],)
        scale = keras.random.uniform(units, 1 - self.strength / 2, 1 + self.strength / 2,
                                     seed=self.seed_generator)
        shift = keras.random.uniform(units, -self.strength, self.strength,
                                     seed=self.seed_generator)
        return inputs * scale + shift

    def get_config(self):
        return {**super().get_config(), "strength": self.strength, "seed": self.seed}


# %% [markdown]
# ## The model
#
# `variant="none"`: each dense layer has its bias and feeds its ReLU directly (codelab
# step 2.1's network). `"bn"`: no bias, BN before the ReLU, with its offset but no scale,
# which ReLU does not need (step 4.1's network). `"noisy_bn"`: the same, with the noise
# between BN and the ReLU. Each noise layer has a seed of its own (`10 * seed + layer`),
# so that the noise draws no number from the generator the kernels are drawn from, and the
# three variants of a seed start from the same kernels.


# %%
def build_model(variant: str, noise_strength: float = 1.0, seed: int = 0) -> keras.Model:
    inputs = keras.Input(shape=(784,), name="pixels")
    x = inputs
    for index, units in enumerate((200, 100, 60, 30), start=1):
        x = layers.Dense(units, use_bias=variant == "none", name=f"dense{index}")(x)
        if variant != "none":
            x = BatchNorm(scale=False, name=f"dense{index}_bn")(x)
        if variant == "noisy_bn":
            x = ShiftingNoise(noise_strength, seed=10 * seed + index,
                              name=f"dense{index}_noise")(x)
        x = layers.Activation("relu", name=f"dense{index}_relu")(x)
    outputs = layers.Dense(10, activation="softmax", name="softmax")(x)
    return keras.Model(inputs, outputs, name=f"dense_{variant}")


# %% [markdown]
# ## The optimizer
#
# Plain SGD at a constant `--learning-rate` (0.1), as Santurkar et al. train: each step is
# then exactly `-learning_rate * g`, the direction the smoothness measures look along.


# %%
def make_optimizer(learning_rate: float) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(learning_rate)


# %% [markdown]
# ## The smoothness measures
#
# At weights `w`, with the gradient `g` of the loss on a fixed batch, the measurement
# moves the weights to `w - eta g` for each step size `eta` and takes the loss and the
# gradient there. The loss is computed as in training, with the batch's own statistics and,
# in the noisy network, one draw of the noise (`call_in_training_mode` restores BN's moving
# statistics and the noise's seed state after each call, so every `eta` sees the same
# draw). The weights are put back afterwards: measuring does not train the model. The
# gradient measures are raw norms, as in the paper: they depend on how each network is
# parametrized (BN makes the loss blind to the scale of the kernels before it), so compare
# their trends as much as their levels.


# %%
def loss_and_gradient(model: keras.Model, images, labels):
    with tf.GradientTape() as tape:
        probabilities = call_in_training_mode(model, images)
        loss = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
        loss = keras.ops.mean(loss)
    return float(loss), tape.gradient(loss, model.trainable_variables)


def along_the_gradient(model: keras.Model, images, labels, step_sizes) -> dict:
    """Santurkar et al.'s measures at the model's weights `w`, along `-g`:
    `loss_range`, max - min of L(w - eta g) over the step sizes; `gradient_change`, the
    largest ||grad L(w - eta g) - g||; `effective_beta`, the largest such change divided by
    the distance ||eta g||. The model's variables are left as they were."""
    weights = [variable.numpy() for variable in model.trainable_variables]
    loss, gradient = loss_and_gradient(model, images, labels)
    gradient_norm = float(tf.linalg.global_norm(gradient))
    losses, changes = [], []
    try:
        for step_size in step_sizes:
            for variable, weight, slope in zip(model.trainable_variables, weights, gradient):
                variable.assign(weight - step_size * slope)
            loss_there, gradient_there = loss_and_gradient(model, images, labels)
            losses.append(loss_there)
            changes.append(float(tf.linalg.global_norm(
                [there - here for there, here in zip(gradient_there, gradient)])))
    finally:
        for variable, weight in zip(model.trainable_variables, weights):
            variable.assign(weight)
    return {"loss": loss, "gradient_norm": gradient_norm,
            "loss_range": max(losses) - min(losses),
            "gradient_change": max(changes),
            "effective_beta": max(change / (step_size * gradient_norm + 1e-12)
                                  for change, step_size in zip(changes, step_sizes))}


# %% [markdown]
# ## Train and compare
#
# `experiment.run` trains every variant for every seed with `model.fit`, in records of
# `--record-every` steps; at the start and after each record it takes the measures above
# and the statistics of the fourth layer's inputs. Then it evaluates the 10,000 test digits
# (noise off), prints each variant's mean ± sd and the test set's noise floor, and writes
# `figure.png` and `metrics.json` into `--outdir`.

# %%
CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("noisy_bn", CONFIG))

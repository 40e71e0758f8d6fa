"""Cross-check with d2l.ai: LeNet with sigmoid and BN on Fashion-MNIST.

The "Batch Normalization" chapter of Dive into Deep Learning (d2l-ai/d2l-en,
chapter_convolutional-modern/batch-norm.md) puts BN after every convolution and dense
layer of LeNet, before the sigmoid, trains it with plain SGD at rate 1.0 for 10 epochs of
batch 256 on Fashion-MNIST, once with its from-scratch layer and once with the built-in
one, and reports test accuracy 0.883 and 0.884; the LeNet chapter
(chapter_convolutional-neural-networks/lenet.md) trains the same LeNet without BN, at
rate 0.9, to 0.811. This experiment rebuilds the three networks layer for layer and
trains them the same way:

    scratch    tfbn.BatchNorm with d2l's from-scratch values: momentum 0.9, epsilon 1e-5
    built-in   keras.layers.BatchNormalization() with its defaults (as d2l's TensorFlow
               code): momentum 0.99, epsilon 1e-3
    no BN      d2l's LeNet: padding 2 on the first convolution (so 16 x 5 x 5 features
               reach the dense layers; the BN nets, unpadded, pass 16 x 4 x 4)

As in d2l, the convolutions and dense layers keep their biases (BN's offset makes them
redundant; d2l keeps them), weights start from Keras's Glorot-uniform default, pixels are
scaled to [0, 1] and nothing else, the loss is the cross-entropy of the logits, and the
reported training accuracy is the running one over each epoch, in training mode.

After training, each BN network is also evaluated with its moving statistics replaced by
`tfbn.recalibrate_batchnorm` over 50 training batches (PreciseBN): "recalibrated".

Default: 3 epochs (3 minutes on 2 shared CPU cores). d2l's setting, 10 epochs (8 minutes):

    tfbn experiment d2l_lenet --epochs 10
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from tfbn import data
from tfbn.config import (
    check_fields, check_positive, check_positive_integers, check_verbose, option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    dataset_arrays, outdir_field, save_results, seed_field, verbose_field)
from tfbn.layer import BatchNorm
from tfbn.practice import recalibrate_batchnorm

TITLE = TITLES["d2l_lenet"]

DATASET = "fashion_mnist"
D2L_EPOCHS = 10
EVALUATION_BATCH_SIZE = 1000
RECALIBRATION_BATCHES = 50


@dataclasses.dataclass(frozen=True)
class Network:
    name: str
    label: str
    d2l_test_accuracy: float
    color: str
    marker: str
    linestyle: str


# Scratch and built-in train alike: dashes and markers keep both visible where they overlap.
NETWORKS = (
    Network("scratch", "BN from scratch (tfbn.BatchNorm)", 0.883, "tab:blue", "o", "-"),
    Network("builtin", "BN built in (keras)", 0.884, "tab:green", "s", "--"),
    Network("none", "no BN", 0.811, "tab:gray", "^", "-"),
)


@dataclasses.dataclass
class Config:
    epochs: int = dataclasses.field(
        default=3, metadata=option(f"epochs per network (d2l: {D2L_EPOCHS})"))
    batch_size: int = dataclasses.field(
        default=256, metadata=option("training batch size (d2l: 256)"))
    learning_rate: float = dataclasses.field(
        default=1.0, metadata=option("SGD learning rate of the BN LeNets (d2l: 1.0)"))
    plain_learning_rate: float = dataclasses.field(
        default=0.9, metadata=option("SGD learning rate of the LeNet without BN "
                                     "(d2l's LeNet chapter: 0.9)"))
    seed: int = seed_field()
    outdir: str = outdir_field("d2l_lenet")
    verbose: int = verbose_field(2, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "batch_size")
        check_positive(self, "learning_rate", "plain_learning_rate")
        check_verbose(self)


def _scratch_bn(name: str) -> keras.layers.Layer:
    return BatchNorm(momentum=0.9, epsilon=1e-5, name=name)


def _builtin_bn(name: str) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(name=name)


def bn_lenet(make_bn) -> keras.Model:
    """d2l's BNLeNet: (conv or dense) -> BN -> sigmoid, average pooling, 10 logits."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1), name="image"),
        layers.Conv2D(6, 5, name="conv1"), make_bn("conv1_bn"),
        layers.Activation("sigmoid", name="conv1_sigmoid"),
        layers.AveragePooling2D(2, strides=2, name="pool1"),
        layers.Conv2D(16, 5, name="conv2"), make_bn("conv2_bn"),
        layers.Activation("sigmoid", name="conv2_sigmoid"),
        layers.AveragePooling2D(2, strides=2, name="pool2"),
        layers.Flatten(name="flatten"),
        layers.Dense(120, name="dense1"), make_bn("dense1_bn"),
        layers.Activation("sigmoid", name="dense1_sigmoid"),
        layers.Dense(84, name="dense2"), make_bn("dense2_bn"),
        layers.Activation("sigmoid", name="dense2_sigmoid"),
        layers.Dense(10, name="logits"),
    ], name="bn_lenet")


def lenet() -> keras.Model:
    """d2l's LeNet without BN; its first convolution is padded by 2 ("same")."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1), name="image"),
        layers.Conv2D(6, 5, padding="same", activation="sigmoid", name="conv1"),
        layers.AveragePooling2D(2, strides=2, name="pool1"),
        layers.Conv2D(16, 5, activation="sigmoid", name="conv2"),
        layers.AveragePooling2D(2, strides=2, name="pool2"),
        layers.Flatten(name="flatten"),
        layers.Dense(120, activation="sigmoid", name="dense1"),
        layers.Dense(84, activation="sigmoid", name="dense2"),
        layers.Dense(10, name="logits"),
    ], name="lenet")


def build_network(name: str) -> keras.Model:
    """The network called `name` ("scratch", "builtin" or "none")."""
    builders = {"scratch": lambda: bn_lenet(_scratch_bn),
                "builtin": lambda: bn_lenet(_builtin_bn),
                "none": lenet}
    if name not in builders:
        raise ValueError(f"network must be one of {', '.join(builders)}; got {name!r}")
    return builders[name]()


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    arrays = dataset_arrays(arrays, DATASET)
    print(f"d2l LeNet cross-check on Fashion-MNIST: {config.epochs} epochs of batch "
          f"{config.batch_size}, SGD {config.learning_rate:g} (BN) / "
          f"{config.plain_learning_rate:g} (no BN)")

    results = {}
    for network in NETWORKS:
        keras.utils.set_random_seed(config.seed)
        # A fresh pipeline per network: one shared pipeline would show each network the
        # next epochs' orders, not the same ones.
        train_dataset, test_dataset = data.mnist_datasets(
            config.batch_size, seed=config.seed, arrays=arrays,
            test_batch_size=EVALUATION_BATCH_SIZE)
        model = build_network(network.name)
        rate = config.plain_learning_rate if network.name == "none" else config.learning_rate
        model.compile(optimizer=keras.optimizers.SGD(rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        started = time.perf_counter()
        history = model.fit(train_dataset, epochs=config.epochs, verbose=config.verbose,
                            shuffle=False,  # the dataset reshuffles itself every epoch
                            validation_data=test_dataset)
        seconds = time.perf_counter() - started
        test_accuracy = history.history["val_accuracy"][-1]
        recalibrated = None
        if network.name != "none":
            # PreciseBN: the statistics of the final weights instead of moving averages
            # taken while rate 1.0 still moved the weights.
            recalibrate_batchnorm(model, train_dataset, steps=RECALIBRATION_BATCHES)
            recalibrated = float(model.evaluate(test_dataset, verbose=0)[1])
        results[network.name] = {
            "label": network.label,
            "learning_rate": rate,
            "test_accuracy": float(test_accuracy),
            "d2l_test_accuracy": network.d2l_test_accuracy,
            "difference_from_d2l": float(test_accuracy - network.d2l_test_accuracy),
            "train_accuracy": float(history.history["accuracy"][-1]),
            "train_loss": float(history.history["loss"][-1]),
            "test_accuracy_per_epoch": [float(a) for a in history.history["val_accuracy"]],
            "train_loss_per_epoch": [float(a) for a in history.history["loss"]],
            "training_seconds": round(seconds, 1),
            "test_accuracy_recalibrated": recalibrated,
        }
        print(f"{network.label:>32}: test accuracy {test_accuracy:.3f} (d2l, 10 epochs: "
              f"{network.d2l_test_accuracy:.3f}), train accuracy "
              f"{history.history['accuracy'][-1]:.3f}; {seconds:.0f} s")
        if recalibrated is not None:
            print(f"{'':>32}  recalibrated over {RECALIBRATION_BATCHES} training batches: "
                  f"test accuracy {recalibrated:.3f}")

    metrics = {"experiment": "d2l_lenet", "dataset": DATASET, "networks": results}
    save_results(config.outdir, metrics, _figure(results, config), config)
    return metrics


def _figure(results: dict, config: Config):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(12, 4.8), layout="constrained")
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    epochs = np.arange(1, config.epochs + 1)
    for network in NETWORKS:
        result = results[network.name]
        style = {"color": network.color, "marker": network.marker,
                 "linestyle": network.linestyle}
        accuracy_axes.plot(epochs, result["test_accuracy_per_epoch"], **style,
                           label=f"{network.label}: {result['test_accuracy']:.3f}")
        accuracy_axes.axhline(network.d2l_test_accuracy, color=network.color, linestyle=":",
                              label=f"d2l after {D2L_EPOCHS} epochs: "
                                    f"{network.d2l_test_accuracy:.3f}")
        loss_axes.plot(epochs, result["train_loss_per_epoch"], **style, label=network.label)
    accuracy_axes.set(title="(a) test accuracy after each epoch\n(dotted: d2l's published "
                            "final accuracy)", xlabel="epoch", ylabel="test accuracy")
    loss_axes.set(title="(b) training loss (running mean over each epoch)", xlabel="epoch",
                  ylabel="cross-entropy")
    accuracy_axes.legend(loc="lower right", fontsize=8)
    loss_axes.legend(loc="upper right")
    for axes in (accuracy_axes, loss_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(f"d2l.ai's LeNet (sigmoid) on Fashion-MNIST: {config.epochs} epochs, "
                    f"batch {config.batch_size}, SGD {config.learning_rate:g} with BN, "
                    f"{config.plain_learning_rate:g} without")
    return figure

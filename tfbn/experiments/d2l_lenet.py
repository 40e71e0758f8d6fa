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

Each network trains for `seeds` seeds; for a seed, all three start from the same kernels
and see the same batches. After every epoch each BN network's test accuracy is measured
three ways (`EpochEvaluations`): with its moving statistics (what d2l reports),
recalibrated (the moving statistics replaced by the average batch statistics of the
current weights over 50 fixed training batches, `tfbn.recalibrate_batchnorm`, PreciseBN,
then put back) and normalizing each test batch with its own statistics. The numbers are
d2l's TensorFlow tab's, v0.17.5 (docs/experiments.md, section 7, traces them).

Default: 3 epochs, 3 seeds (5 min 38 s on 2 CPU cores). d2l's setting, 10 epochs
(18 minutes):

    tfbn experiment d2l_lenet --epochs 10
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from tfbn import data
from tfbn.config import (
    check_fields, check_positive, check_positive_integers, check_verbose, option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    dataset_arrays, noise_floor, outdir_field, percent_spread, plot_mean_and_spread, plot_seeds,
    plural, save_results, seed_field, seeds_field, seeds_text, spread, verbose_field)
from tfbn.layer import BatchNorm
from tfbn.practice import recalibrate_batchnorm

TITLE = TITLES["d2l_lenet"]

DATASET = "fashion_mnist"
D2L_EPOCHS = 10
RECALIBRATION_BATCHES = 50
PIPELINES = ("reshuffled", "fixed_batches")
# How a BN network's test accuracy is measured (Keras's validation is the first).
EVALUATIONS = {"moving": "moving statistics",
               "recalibrated": "recalibrated statistics",
               "per_batch": "each test batch's statistics"}


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
    networks: str = dataclasses.field(
        default=",".join(network.name for network in NETWORKS),
        metadata=option("comma-separated networks to train, from: "
                        + ", ".join(network.name for network in NETWORKS)))
    pipeline: str = dataclasses.field(
        default="reshuffled",
        metadata=option("training batches: reshuffled (the examples reshuffled every epoch, "
                        "as d2l's PyTorch and MXNet tabs do) or fixed_batches (d2l's "
                        "TensorFlow tab: batched, then the batches shuffled, so every epoch "
                        "has the same batches)", PIPELINES))
    seeds: int = seeds_field(3)
    seed: int = seed_field()
    outdir: str = outdir_field("d2l_lenet")
    verbose: int = verbose_field(2, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "batch_size", "seeds")
        check_positive(self, "learning_rate", "plain_learning_rate")
        check_verbose(self)
        self.chosen_networks()

    def chosen_networks(self) -> tuple[Network, ...]:
        """The networks named in `networks`, in the order of NETWORKS."""
        names = [name.strip() for name in self.networks.split(",") if name.strip()]
        known = [network.name for network in NETWORKS]
        if not names or any(name not in known for name in names):
            raise ValueError(f"networks must name some of {', '.join(known)}; "
                             f"got {self.networks!r}")
        return tuple(network for network in NETWORKS if network.name in names)


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


class EpochEvaluations(keras.callbacks.Callback):
    """After each epoch, the test accuracy of a BN network three ways: with its moving
    statistics (what Keras's validation reports), recalibrated (the moving statistics
    replaced by the average batch statistics of the current weights over fixed training
    images, then put back), and normalizing each test batch with its own statistics. The
    model leaves every epoch exactly as it came: training goes on as if nothing was
    measured."""

    def __init__(self, test_images, test_labels, recalibration_images, batch_size: int,
                 evaluations=tuple(EVALUATIONS)):
        super().__init__()
        self.test_images, self.test_labels = test_images, test_labels
        self.recalibration_images = recalibration_images
        self.batch_size = batch_size
        self.curves = {evaluation: [] for evaluation in evaluations}

    def on_epoch_end(self, epoch, logs=None):
        for evaluation in self.curves:
            self.curves[evaluation].append(self.accuracy(evaluation))

    def accuracy(self, evaluation: str) -> float:
        model = self.model
        state = [variable.numpy() for variable in model.non_trainable_variables]
        if evaluation == "recalibrated":
            recalibrate_batchnorm(model, self.recalibration_images,
                                  batch_size=self.batch_size)
        correct = 0
        for start in range(0, len(self.test_images), self.batch_size):
            images = self.test_images[start:start + self.batch_size]
            logits = model(images, training=evaluation == "per_batch")
            correct += int(np.sum(np.argmax(keras.ops.convert_to_numpy(logits), axis=1)
                                  == self.test_labels[start:start + self.batch_size]))
        for variable, value in zip(model.non_trainable_variables, state):
            variable.assign(value)
        return correct / len(self.test_images)


def largest_swing(curve) -> float:
    """The largest change of a per-epoch curve from one epoch to the next."""
    return float(np.max(np.abs(np.diff(curve)))) if len(curve) > 1 else 0.0


def fixed_batches(arrays, batch_size: int, seed: int):
    """d2l's TensorFlow training pipeline (`d2l.load_data_fashion_mnist`:
    `.batch(batch_size).shuffle(...)`): the examples are batched once, in the dataset's
    order, and only the order of the batches is reshuffled each epoch."""
    (x_train, y_train), _ = arrays
    batches = -(-len(x_train) // batch_size)
    dataset = tf.data.Dataset.from_tensor_slices(
        (data.normalize_images(x_train), np.asarray(y_train, dtype=np.int32)))
    return dataset.batch(batch_size).shuffle(batches, seed=seed, reshuffle_each_iteration=True)


def train_network(network: Network, config: Config, arrays, seed: int, images) -> dict:
    """One network trained d2l's way from `seed`; its per-epoch curves and seconds."""
    keras.utils.set_random_seed(seed)
    # A fresh pipeline per network: one shared pipeline would show each network the next
    # epochs' orders, not the same ones.
    if config.pipeline == "fixed_batches":
        train_dataset = fixed_batches(arrays, config.batch_size, seed)
    else:
        train_dataset, _ = data.mnist_datasets(config.batch_size, seed=seed, arrays=arrays)
    model = build_network(network.name)
    rate = config.plain_learning_rate if network.name == "none" else config.learning_rate
    model.compile(optimizer=keras.optimizers.SGD(rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x_test, y_test, recalibration_images = images
    # Without BN the three evaluations are one: inference mode.
    evaluations = EpochEvaluations(x_test, y_test, recalibration_images, config.batch_size,
                                   ("moving",) if network.name == "none" else EVALUATIONS)
    started = time.perf_counter()
    history = model.fit(train_dataset, epochs=config.epochs, verbose=config.verbose,
                        shuffle=False,  # the dataset reshuffles itself every epoch
                        callbacks=[evaluations])
    return {"learning_rate": rate,
            "test_accuracy_per_epoch": evaluations.curves,
            "train_accuracy_per_epoch": [float(a) for a in history.history["accuracy"]],
            "train_loss_per_epoch": [float(a) for a in history.history["loss"]],
            "training_seconds": round(time.perf_counter() - started, 1)}


def summarize(network: Network, runs: list[dict]) -> dict:
    """The per-seed runs of one network: every seed's curves, and the spreads of its final,
    best and swing numbers for each evaluation."""
    evaluations = list(runs[0]["test_accuracy_per_epoch"])
    per_epoch = {evaluation: [run["test_accuracy_per_epoch"][evaluation] for run in runs]
                 for evaluation in evaluations}
    return {
        "label": network.label,
        "learning_rate": runs[0]["learning_rate"],
        "d2l_test_accuracy": network.d2l_test_accuracy,
        "test_accuracy": {evaluation: spread([curve[-1] for curve in curves])
                          for evaluation, curves in per_epoch.items()},
        "best_epoch_test_accuracy": {evaluation: spread([max(curve) for curve in curves])
                                     for evaluation, curves in per_epoch.items()},
        "largest_swing": {evaluation: spread([largest_swing(curve) for curve in curves])
                          for evaluation, curves in per_epoch.items()},
        "train_accuracy": spread([run["train_accuracy_per_epoch"][-1] for run in runs]),
        "train_loss": spread([run["train_loss_per_epoch"][-1] for run in runs]),
        "test_accuracy_per_epoch": per_epoch,
        "train_loss_per_epoch": [run["train_loss_per_epoch"] for run in runs],
        "train_accuracy_per_epoch": [run["train_accuracy_per_epoch"] for run in runs],
        "training_seconds": [run["training_seconds"] for run in runs],
    }


def trained(results: dict) -> list[Network]:
    """The networks `results` holds, in the order of NETWORKS."""
    return [network for network in NETWORKS if network.name in results]


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    arrays = dataset_arrays(arrays, DATASET)
    (x_train, _), (x_test, y_test) = arrays
    images = (data.normalize_images(x_test), y_test.astype(np.int64),
              data.normalize_images(x_train[:RECALIBRATION_BATCHES * config.batch_size]))
    seeds = list(range(config.seed, config.seed + config.seeds))
    print(f"d2l LeNet cross-check on Fashion-MNIST: {plural(config.epochs, 'epoch')} of batch "
          f"{config.batch_size}, SGD {config.learning_rate:g} (BN) / "
          f"{config.plain_learning_rate:g} (no BN), {config.pipeline} batches, seeds {seeds}")

    results = {}
    for network in config.chosen_networks():
        runs = []
        for seed in seeds:
            runs.append(train_network(network, config, arrays, seed, images))
            final = {evaluation: curve[-1]
                     for evaluation, curve in runs[-1]["test_accuracy_per_epoch"].items()}
            print(f"{network.label:>32}, seed {seed}: test accuracy "
                  + ", ".join(f"{evaluation} {value:.3f}" for evaluation, value in final.items())
                  + f"; train accuracy {runs[-1]['train_accuracy_per_epoch'][-1]:.3f}; "
                    f"{runs[-1]['training_seconds']:.0f} s")
        results[network.name] = summarize(network, runs)

    best = max(summary["mean"] for result in results.values()
               for summary in result["test_accuracy"].values())
    noise = noise_floor(best, len(y_test))
    print(f"\nmean ± sd over seeds {seeds}, after {plural(config.epochs, 'epoch')} "
          f"(d2l after {D2L_EPOCHS}):")
    for network in trained(results):
        result = results[network.name]
        for evaluation, summary in result["test_accuracy"].items():
            how = "inference" if network.name == "none" else EVALUATIONS[evaluation]
            print(f"{network.label:>32} {how:>29}: "
                  f"{percent_spread(summary)}  (d2l {100 * network.d2l_test_accuracy:.1f}%; "
                  f"largest swing between epochs "
                  f"{100 * result['largest_swing'][evaluation]['mean']:.1f} points)")
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")
    metrics = {"experiment": "d2l_lenet", "dataset": DATASET, "seeds": seeds,
               "test_size": int(len(y_test)), "noise_floor": noise,
               "evaluations": EVALUATIONS, "networks": results}
    save_results(config.outdir, metrics, _figure(results, config, noise, seeds), config)
    return metrics


def _figure(results: dict, config: Config, noise: float, seeds: list[int]):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(16, 5), layout="constrained")
    curve_axes, final_axes, loss_axes = figure.subplots(
        1, 3, gridspec_kw={"width_ratios": [1.1, 1.3, 0.9]})
    epochs = np.arange(1, config.epochs + 1)
    plotted = {}
    for network in trained(results):
        result = results[network.name]
        for evaluation, linestyle in (("moving", "-"), ("recalibrated", ":")):
            if evaluation in result["test_accuracy_per_epoch"]:
                curves = 100 * np.array(result["test_accuracy_per_epoch"][evaluation])
                label = (network.label if network.name == "none"
                         else f"{network.label}, {EVALUATIONS[evaluation]}")
                plotted[label] = curves.mean(axis=0)
                plot_mean_and_spread(curve_axes, epochs, curves, label,
                                     network.color, marker=network.marker,
                                     linestyle=linestyle, markersize=4)
        plot_mean_and_spread(loss_axes, epochs, result["train_loss_per_epoch"], network.label,
                             network.color, marker=network.marker,
                             linestyle=network.linestyle, markersize=4)
    # The story is in the 70-90% band; chance-level first epochs (no BN) would squash it.
    values = np.concatenate(list(plotted.values()))
    learned = values[values >= 50]
    bottom = float(np.floor(learned.min() - 3)) if len(learned) else 0.0
    below = [f"{label.split(' (')[0].split(',')[0]}"
             f"{', moving' if 'moving' in label else ''} epoch "
             + ", ".join(f"{epoch} ({value:.0f}%)" for epoch, value in zip(epochs, curve)
                         if value < bottom)
             for label, curve in plotted.items() if np.any(curve < bottom)]
    curve_axes.set_ylim(bottom, min(100.0, float(np.ceil(values.max() + 3))))
    curve_axes.set(title="(a) test accuracy after each epoch: mean ± sd over seeds"
                         + (f"\nunder the axis: {'; '.join(below)}" if below else ""),
                   xlabel="epoch", ylabel="test accuracy (%)")
    curve_axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=7, ncol=2)
    curve_axes.xaxis.set_major_locator(MaxNLocator(integer=True))

    labels, summaries, colors = [], [], []
    for network in trained(results):
        for evaluation, summary in results[network.name]["test_accuracy"].items():
            short = {"scratch": "scratch", "builtin": "built in", "none": "no BN"}[network.name]
            how = "inference" if network.name == "none" else evaluation.replace("_", " ")
            labels.append(f"{short}\n{how}")
            summaries.append(summary)
            colors.append(network.color)
    plot_seeds(final_axes, labels, summaries, noise, colors=colors)
    bn_reference = [network.d2l_test_accuracy for network in NETWORKS if network.name != "none"]
    final_axes.axhline(100 * np.mean(bn_reference), color="black", linestyle="--", linewidth=1,
                       label=f"d2l, BN: {100 * bn_reference[0]:.1f}% (scratch), "
                             f"{100 * bn_reference[1]:.1f}% (built in)")
    final_axes.axhline(100 * NETWORKS[-1].d2l_test_accuracy, color="tab:gray", linestyle="--",
                       linewidth=1, label=f"d2l, no BN: {100 * NETWORKS[-1].d2l_test_accuracy:.1f}%")
    low, high = final_axes.get_ylim()
    final_axes.set_ylim(min(low, 100 * NETWORKS[-1].d2l_test_accuracy - 1),
                        min(100.05, max(high, 100 * max(bn_reference) + 1)))
    final_axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, ncol=2)
    final_axes.set(title=f"(b) after epoch {config.epochs}: every seed (dots), mean ± sd (bars)",
                   ylabel="test accuracy (%)")
    loss_axes.set(title="(c) training loss (running mean over each epoch)", xlabel="epoch",
                  ylabel="cross-entropy")
    loss_axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8)
    loss_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in (curve_axes, loss_axes):
        axes.grid(alpha=0.3)
    figure.suptitle(f"d2l.ai's LeNet (sigmoid) on Fashion-MNIST: {plural(config.epochs, 'epoch')}, "
                    f"batch {config.batch_size}, SGD {config.learning_rate:g} with BN, "
                    f"{config.plain_learning_rate:g} without; "
                    + ("the same batches every epoch (d2l's TensorFlow pipeline); "
                       if config.pipeline == "fixed_batches" else "")
                    + seeds_text(seeds))
    return figure

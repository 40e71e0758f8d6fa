"""Vanishing gradients: does batch norm keep the gradients of a deep sigmoid net alive?

The claim: in a deep sigmoid network the gradient shrinks on its way down, each sigmoid
multiplying it by at most 1/4, so the first layers barely learn; with BN before each
sigmoid the sigmoid inputs stay in its steep middle and the gradient reaches the first
layers intact.

The experiment trains the codelab's five-layer sigmoid network (784 -> 200 -> 100 -> 60
-> 30 -> 10) with the layers of step 2.0 (no BN) and with those of step 4.0 (BN with
scale and offset before each sigmoid, no bias before BN), with the same optimizer and
rate. For a seed, both networks start from the same kernels and see the same batches in
the same order; the comparison runs for `seeds` seeds (seed, seed + 1, ...). At
initialisation and every `record_every` steps it measures, for each layer, the L2 norm of
the gradient of the loss with respect to the layer's weight matrix, on a fixed sample of
training images, the same for every seed (BN with that sample's batch statistics, as in
training; the measurement leaves the moving statistics alone). The first layer's matrix
(784 x 200) has 523 times as many entries as the last's (30 x 10), so equal per-entry
gradients would give it a 23 times larger norm; the norms are reported as they are, not
rescaled. It reports the norms and the test accuracy on the whole test set as mean ± sd
over the seeds with every seed's value, and the test set's own noise floor (the binomial
standard error at the best mean).

The optimizer is plain SGD, which moves a weight in proportion to its gradient, so that a
small gradient means a slow layer (Adam rescales each gradient and would hide it). The
norms at initialisation do not depend on the rate; the accuracies do. The default rate is
1.0, where the plain network trains: in the learning-rate sweep (1,200 steps, 3 seeds)
it reached 17.53% at SGD 0.1 (near chance: it had barely started), 63.58% at 0.3, 88.30%
at 1 and 92.29% at 3, and failed at 10; with BN 91-95% at all of them. 1.0 lies
inside the plain network's window, a factor 3 from both of its ends, and is BN's best
rate, so the accuracy gap measures what depth does with and without BN, not a rate that
suits only one of them. The old rate, where the plain network stays near chance for most
of the run, is `--learning-rate 0.1`.

Default (1 min 54 s on 2 CPU cores, measured 2026-12-02): SGD 1.0, 3,000 steps of batch 100 (5 epochs), a record every 100 steps, 3 seeds.
The codelab's 10,000 steps:

    tfbn experiment vanishing_gradients --steps 10000 --record-every 250
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfbn import data, steps
from tfbn.config import (
    check_fields, check_divides, check_positive, check_positive_integers, check_verbose,
    option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    batch_size_field, bn_field, call_in_training_mode, dataset_arrays, dataset_field,
    fit_in_records, noise_floor, optimizer_named, outdir_field, percent_spread,
    plot_mean_and_spread, plural, RecordEveryEpoch, save_results, seed_field, seeds_field,
    seeds_text, spread, verbose_field)

TITLE = TITLES["vanishing_gradients"]

# The codelab step whose build_model gives each network; not its optimizer or schedule.
ARCHITECTURES = {"none": "2.0", "bn": "4.0"}
LABELS = {"none": "5-layer sigmoid net, no BN", "bn": "with BN before each sigmoid"}
OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "plain SGD"}
EVALUATION_BATCH_SIZE = 1000


@dataclasses.dataclass
class Config:
    steps: int = dataclasses.field(default=3000, metadata=option("training steps per network"))
    record_every: int = dataclasses.field(
        default=100, metadata=option("steps between two gradient measurements; must divide "
                                     "steps"))
    batch_size: int = batch_size_field(100)
    optimizer: str = dataclasses.field(
        default="sgd", metadata=option("optimizer for both networks: plain SGD steps in "
                                       "proportion to the gradient, Adam rescales it",
                                       ("sgd", "adam")))
    learning_rate: float = dataclasses.field(
        default=1.0, metadata=option("learning rate for both networks (1.0: one where the "
                                     "network without BN trains too; 0.1: the old default)"))
    probe_size: int = dataclasses.field(
        default=1000, metadata=option("training images the gradients are measured on"))
    bn: str = bn_field()
    seeds: int = seeds_field(3)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("vanishing_gradients")
    verbose: int = verbose_field(0, "record")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "steps", "record_every", "batch_size", "probe_size",
                                "seeds")
        check_divides(self, "record_every", "steps")
        check_positive(self, "learning_rate")
        check_verbose(self)


def weight_matrices(model: keras.Model) -> dict[str, keras.Variable]:
    """The kernel of every Dense layer, input side first, by layer name."""
    return {layer.name: layer.kernel for layer in model.layers
            if isinstance(layer, keras.layers.Dense)}


def gradient_norms(model: keras.Model, images, labels) -> dict[str, float]:
    """L2 norm of d(mean cross-entropy)/d(kernel) for each Dense layer, computed as training
    does (BN with the batch statistics of `images`); the model is left unchanged."""
    matrices = weight_matrices(model)
    loss_function = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        loss = loss_function(labels, call_in_training_mode(model, images))
    gradients = tape.gradient(loss, list(matrices.values()))
    return {name: float(tf.norm(gradient)) for name, gradient in zip(matrices, gradients)}


class GradientNormRecorder(RecordEveryEpoch):
    """Per-layer gradient norms on a fixed sample, at the start and after every epoch
    (here an epoch is `record_every` steps)."""

    def __init__(self, images, labels):
        super().__init__()
        self.images = images
        self.labels = labels
        self.steps: list[int] = []
        self.norms: list[dict[str, float]] = []

    def _record(self):
        self.steps.append(int(self.model.optimizer.iterations.numpy()))
        self.norms.append(gradient_norms(self.model, self.images, self.labels))


def train_once(name: str, seed: int, config: Config, arrays, probe, test) -> dict:
    """Network `name` trained from `seed`'s kernels and batches: its gradient norms per
    record (records x layers, input side first) and its test accuracy and loss per record."""
    keras.utils.set_random_seed(seed)
    # A new pipeline for every run: iterating a dataset again reshuffles it differently,
    # and both networks of a seed must see the same batches in the same order.
    train_dataset, _ = data.mnist_datasets(config.batch_size, flat=True, seed=seed,
                                           arrays=arrays)
    step = steps.load(ARCHITECTURES[name])
    model = step.build_model() if name == "none" else step.build_model(config.bn)
    model.compile(optimizer=optimizer_named(config.optimizer, config.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    recorder = GradientNormRecorder(*probe)
    history, seconds = fit_in_records(model, train_dataset, config, callbacks=[recorder],
                                      validation_data=test,
                                      validation_batch_size=EVALUATION_BATCH_SIZE)
    layers = list(recorder.norms[0])
    return {"layers": layers, "steps": recorder.steps,
            "norms": np.array([[record[layer] for layer in layers]
                               for record in recorder.norms]),
            "test_accuracy": [float(a) for a in history.history["val_accuracy"]],
            "test_loss": [float(loss) for loss in history.history["val_loss"]],
            "seconds": seconds}


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    arrays = dataset_arrays(arrays, config.dataset)
    (x_train, y_train), (x_test, y_test) = arrays
    probe = (data.normalize_images(x_train[:config.probe_size], flat=True),
             y_train[:config.probe_size].astype(np.int32))
    test = (data.normalize_images(x_test, flat=True), y_test)
    seeds = list(range(config.seed, config.seed + config.seeds))
    print(f"vanishing gradients: {config.steps} steps of batch {config.batch_size}, "
          f"{config.optimizer} {config.learning_rate:g}, seeds {seeds}")

    results = {}
    for name in ARCHITECTURES:
        per_seed = [train_once(name, seed, config, arrays, probe, test) for seed in seeds]
        layers = per_seed[0]["layers"]
        norms = np.array([r["norms"] for r in per_seed])  # seeds x records x layers
        first_to_last = norms[:, :, 0] / norms[:, :, -1]
        results[name] = {
            "label": LABELS[name],
            "layers": layers,
            "steps": per_seed[0]["steps"],
            "gradient_norms": {layer: norms[:, :, i].tolist()
                               for i, layer in enumerate(layers)},
            "initial_gradient_norms": {layer: spread(norms[:, 0, i])
                                       for i, layer in enumerate(layers)},
            "initial_first_to_last_ratio": spread(first_to_last[:, 0]),
            "median_first_to_last_ratio_in_training": spread(
                np.median(first_to_last[:, 1:], axis=1)),
            "accuracy_steps": per_seed[0]["steps"][1:],
            "test_accuracy": [r["test_accuracy"] for r in per_seed],
            "final_test_accuracy": spread([r["test_accuracy"][-1] for r in per_seed]),
            "final_test_loss": spread([r["test_loss"][-1] for r in per_seed]),
            "training_seconds": round(sum(r["seconds"] for r in per_seed), 1),
        }
        result = results[name]
        print(f"{'no BN' if name == 'none' else 'with BN'}: gradient norms at step 0, first "
              "to last layer: " + ", ".join(
                  f"{summary['mean']:.2e} ± {summary['sd']:.1e}"
                  for summary in result["initial_gradient_norms"].values())
              + f" (first/last {result['initial_first_to_last_ratio']['mean']:.3g} ± "
                f"{result['initial_first_to_last_ratio']['sd']:.2g}; median in training "
                f"{result['median_first_to_last_ratio_in_training']['mean']:.3g} ± "
                f"{result['median_first_to_last_ratio_in_training']['sd']:.2g}); final test "
                f"accuracy {percent_spread(result['final_test_accuracy'])} (seeds: "
              + ", ".join(f"{100 * r['test_accuracy'][-1]:.2f}" for r in per_seed)
              + f"); {result['training_seconds']:.0f} s")

    best = max(result["final_test_accuracy"]["mean"] for result in results.values())
    noise = noise_floor(best, len(y_test))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")
    metrics = {"experiment": "vanishing_gradients", "optimizer": config.optimizer,
               "learning_rate": config.learning_rate, "seeds": seeds,
               "test_size": int(len(y_test)), "probe_size": int(len(probe[1])),
               "noise_floor": noise, "networks": results}
    save_results(config.outdir, metrics, _figure(results, config, seeds), config)
    return metrics


def _figure(results: dict, config: Config, seeds: list[int]):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(13, 10), layout="constrained")
    (initial_axes, accuracy_axes), training_axes = figure.subplots(2, 2)
    colors = {"none": "tab:gray", "bn": "tab:blue"}
    markers = {"none": "s", "bn": "o"}
    # The two networks' points at a layer sit a little apart, not on top of each other.
    offsets = {"none": -0.08, "bn": 0.08}
    for name, result in results.items():
        positions = np.arange(1, len(result["layers"]) + 1) + offsets[name]
        summaries = list(result["initial_gradient_norms"].values())
        initial_axes.errorbar(positions, [s["mean"] for s in summaries],
                              yerr=[s["sd"] for s in summaries], marker=markers[name],
                              color=colors[name], capsize=4,
                              label=f"{result['label']}: mean ± sd")
        for position, summary in zip(positions, summaries):
            initial_axes.plot(np.full(len(summary["values"]), position), summary["values"],
                              "o", color=colors[name], alpha=0.35, markersize=4)
        plot_mean_and_spread(accuracy_axes, result["accuracy_steps"],
                             100 * np.array(result["test_accuracy"]), result["label"],
                             color=colors[name])
    layers = next(iter(results.values()))["layers"]
    handles, labels = initial_axes.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.4", marker="o", alpha=0.35, linestyle="",
                          markersize=4))
    labels.append(f"one dot per seed ({plural(len(seeds), 'seed')})")
    initial_axes.set_xticks(np.arange(1, len(layers) + 1),
                            [f"{i}: {layer}" for i, layer in enumerate(layers, start=1)])
    initial_axes.set(title="(a) gradient norm per layer at initialisation", yscale="log",
                     xlabel="layer (input side first)", ylabel="||dLoss / dW|| (L2 norm)")
    initial_axes.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                        fontsize=8)
    initial_axes.grid(alpha=0.3, which="both")
    accuracy_axes.set(title="(b) test accuracy during training (mean ± sd)",
                      xlabel="training step", ylabel="test accuracy (%)", ylim=(0, 100))
    accuracy_axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8)
    accuracy_axes.grid(alpha=0.3)

    training_axes[1].sharey(training_axes[0])
    palette = ("tab:red", "tab:orange", "tab:green", "tab:purple", "black")
    for axes, (letter, result) in zip(training_axes, zip("cd", results.values())):
        axes.set_yscale("log")  # before the bands, which depend on it
        for layer, color in zip(result["layers"], palette):
            plot_mean_and_spread(axes, result["steps"], result["gradient_norms"][layer],
                                 layer, color=color)
        axes.set(title=f"({letter}) {result['label']}: gradient norm per layer in training",
                 xlabel="training step", ylabel="||dLoss / dW|| (L2 norm)", yscale="log")
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=5, fontsize=8)
        axes.grid(alpha=0.3, which="both")
    figure.suptitle(f"Vanishing gradients in the 5-layer sigmoid net (784-200-100-60-30-10): "
                    f"{OPTIMIZER_NAMES[config.optimizer]} at a constant rate of "
                    f"{config.learning_rate:g}, batch {config.batch_size}, {seeds_text(seeds)}\n"
                    f"gradient norms measured on {config.probe_size:,} fixed training images; "
                    f"curves: mean ± sd over the seeds")
    return figure

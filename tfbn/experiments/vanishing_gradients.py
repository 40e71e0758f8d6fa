"""Vanishing gradients: does batch norm keep the gradients of a deep sigmoid net alive?

The claim: in a deep sigmoid network the gradient shrinks on its way down, each sigmoid
multiplying it by at most 1/4, so the first layers barely learn; with BN before each
sigmoid the sigmoid inputs stay in its steep middle and the gradient reaches the first
layers intact.

The experiment trains the codelab's five-layer sigmoid network (784 -> 200 -> 100 -> 60
-> 30 -> 10) twice, as step 2.0 builds it (no BN) and as step 4.0 does (BN with scale
and offset before each sigmoid, no bias before BN), with the same optimizer, data order
and seed. At initialisation and every `record_every` steps it measures, for each layer,
the L2 norm of the gradient of the loss with respect to the layer's weight matrix, on a
fixed sample of training images (BN with that sample's batch statistics, as in training;
the measurement leaves the moving statistics alone). The first layer's matrix (784 x 200)
has 523 times as many entries as the last's (30 x 10), so equal per-entry gradients would
give it a 23 times larger norm; the norms are reported as they are, not rescaled.

Default (about 2 minutes on 2 shared CPU cores): 3,000 steps of batch 100 (5 epochs), a
record every 100 steps. The codelab's 10,000 steps:

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
    fit_in_records, optimizer_named, outdir_field, RecordEveryEpoch, save_results, seed_field,
    verbose_field)

TITLE = TITLES["vanishing_gradients"]

ARCHITECTURES = {"none": "2.0", "bn": "4.0"}
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
        default=0.1, metadata=option("learning rate for both networks"))
    probe_size: int = dataclasses.field(
        default=1000, metadata=option("training images the gradients are measured on"))
    bn: str = bn_field()
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("vanishing_gradients")
    verbose: int = verbose_field(0, "record")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "steps", "record_every", "batch_size", "probe_size")
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


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    arrays = dataset_arrays(arrays, config.dataset)
    (x_train, y_train), (x_test, y_test) = arrays
    probe_images = data.normalize_images(x_train[:config.probe_size], flat=True)
    probe_labels = y_train[:config.probe_size].astype(np.int32)
    test_images = data.normalize_images(x_test, flat=True)
    print(f"vanishing gradients: {config.steps} steps of batch {config.batch_size}, "
          f"{config.optimizer} {config.learning_rate:g}")

    results = {}
    for name, step_name in ARCHITECTURES.items():
        keras.utils.set_random_seed(config.seed)
        # A new pipeline for every run: iterating a dataset again reshuffles it differently,
        # and every run must see the same batches in the same order.
        train_dataset, _ = data.mnist_datasets(config.batch_size, flat=True,
                                               seed=config.seed, arrays=arrays)
        model = (steps.load(step_name).build_model() if name == "none"
                 else steps.load(step_name).build_model(config.bn))
        model.compile(optimizer=optimizer_named(config.optimizer, config.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        recorder = GradientNormRecorder(probe_images, probe_labels)
        history, seconds = fit_in_records(
            model, train_dataset, config, callbacks=[recorder],
            validation_data=(test_images, y_test), validation_batch_size=EVALUATION_BATCH_SIZE)
        layers = list(recorder.norms[0])
        norms = np.array([[record[layer] for layer in layers] for record in recorder.norms])
        first_to_last = norms[:, 0] / norms[:, -1]
        accuracies = [float(a) for a in history.history["val_accuracy"]]
        results[name] = {
            "label": "without BN (step 2.0)" if name == "none" else "with BN (step 4.0)",
            "layers": layers,
            "steps": recorder.steps,
            "gradient_norms": {layer: norms[:, i].tolist() for i, layer in enumerate(layers)},
            "initial_gradient_norms": dict(zip(layers, norms[0].tolist())),
            "initial_first_to_last_ratio": float(first_to_last[0]),
            "median_first_to_last_ratio_in_training": float(np.median(first_to_last[1:])),
            "test_accuracy": accuracies,
            "final_test_accuracy": accuracies[-1],
            "training_seconds": round(seconds, 1),
        }
        print(f"{results[name]['label']:>22}: gradient norms at step 0, first to last layer: "
              + ", ".join(f"{value:.2e}" for value in norms[0])
              + f" (first/last {first_to_last[0]:.3g}; median in training "
                f"{np.median(first_to_last[1:]):.3g}); final test accuracy "
                f"{accuracies[-1]:.4f}; {seconds:.0f} s")

    metrics = {"experiment": "vanishing_gradients", "networks": results}
    save_results(config.outdir, metrics, _figure(results, config), config)
    return metrics


def _figure(results: dict, config: Config):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 9), layout="constrained")
    (initial_axes, accuracy_axes), training_axes = figure.subplots(2, 2)
    colors = {"none": "tab:gray", "bn": "tab:blue"}
    for name, result in results.items():
        positions = np.arange(1, len(result["layers"]) + 1)
        initial_axes.plot(positions, list(result["initial_gradient_norms"].values()),
                          marker="o", color=colors[name], label=result["label"])
        accuracy_axes.plot(result["steps"][1:], result["test_accuracy"], color=colors[name],
                           label=result["label"])
    layers = next(iter(results.values()))["layers"]
    initial_axes.set_xticks(np.arange(1, len(layers) + 1),
                            [f"{i}: {layer}" for i, layer in enumerate(layers, start=1)])
    initial_axes.set(title="(a) gradient norm per layer at initialisation", yscale="log",
                     xlabel="layer (input side first)", ylabel="||dLoss / dW||")
    initial_axes.legend()
    initial_axes.grid(alpha=0.3, which="both")
    accuracy_axes.set(title="(b) test accuracy", xlabel="training step",
                      ylabel="test accuracy")
    accuracy_axes.legend(loc="lower right")
    accuracy_axes.grid(alpha=0.3)

    training_axes[1].sharey(training_axes[0])
    palette = ("tab:red", "tab:orange", "tab:green", "tab:purple", "black")
    for axes, (letter, result) in zip(training_axes, zip("cd", results.values())):
        for layer, color in zip(result["layers"], palette):
            axes.plot(result["steps"], result["gradient_norms"][layer], color=color,
                      label=layer)
        axes.set(title=f"({letter}) {result['label']}: gradient norms in training",
                 xlabel="training step", ylabel="||dLoss / dW||", yscale="log")
        axes.legend(loc="best", fontsize=8)
        axes.grid(alpha=0.3, which="both")
    figure.suptitle(f"Five-layer sigmoid network (784-200-100-60-30-10), {config.optimizer} "
                    f"{config.learning_rate:g}, batch {config.batch_size}: gradient norms "
                    f"measured on {config.probe_size} training images")
    return figure

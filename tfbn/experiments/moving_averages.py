"""Moving averages at inference: what BN predicts with once training is over.

The claims: a BN network cannot predict with the statistics of the batch it is given (a
batch of one has no spread; the prediction for one example would depend on the others in
its batch), so it keeps moving averages of the batch statistics during training and uses
them at inference. Those averages lag behind the true population statistics, start from
0 and 1, and forget slowly: after a short run a plain average with momentum 0.99 still
remembers its initial values, while a debiased one (TF1's ExponentialMovingAverage with
`num_updates`, the MNIST codelab's choice) or a lower momentum (0.9) has caught up.

The experiment trains the codelab's step 4.0 network (five dense layers 200-100-60-30 with
BN and scale before each sigmoid, Adam with the step 4.0 schedule
0.0001 + 0.03 e^(-t/1000)) three times, with the same initial weights and data order:

    momentum 0.99            Keras's default, a plain exponential moving average
    momentum 0.99, debiased  tfbn.BatchNorm(debiased=True)
    momentum 0.9             a plain average that forgets ten times faster

Training normalizes with batch statistics only, so the three runs train the very same
weights; they differ in what they would predict with. Every `record_every` steps the
experiment records

    (a) the moving mean and variance of one BN layer against the true population
        statistics of its input (its mean and biased variance over `population_size`
        training images, the layers below normalizing with that sample's statistics),
    (c, d) the test accuracy with the moving statistics, and, for reference, with the
        statistics of the whole test set as one batch,

and at the end (b) the test accuracy of the momentum 0.99 network predicting with batch
statistics on test batches of 1 to 1000 images, against its moving statistics.

Default (about 5 minutes on 2 shared CPU cores): 1,000 steps of batch 100, a record every
25. A longer run, where all the averages have long caught up:

    tfbn experiment moving_averages --steps 6000 --record-every 100
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from tfbn import data, models, steps
from tfbn.config import (
    check_fields, check_divides, check_positive_integers, check_verbose, option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    batch_size_field, call_in_training_mode, dataset_arrays, dataset_field, fit_in_records,
    outdir_field, RecordEveryEpoch, save_results, seed_field, verbose_field)

TITLE = TITLES["moving_averages"]

EVALUATION_BATCH_SIZE = 1000
BATCH_SIZES = (1, 4, 16, 64, 256, 1000)


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    label: str
    momentum: float
    debiased: bool


VARIANTS = (
    Variant("momentum_0.99", "momentum 0.99", 0.99, False),
    Variant("momentum_0.99_debiased", "momentum 0.99, debiased", 0.99, True),
    Variant("momentum_0.9", "momentum 0.9", 0.9, False),
)


@dataclasses.dataclass
class Config:
    steps: int = dataclasses.field(default=1000, metadata=option("training steps per run"))
    record_every: int = dataclasses.field(
        default=25, metadata=option("steps between two records; must divide steps"))
    batch_size: int = batch_size_field(100)
    layer: int = dataclasses.field(
        default=4, metadata=option("which BN layer (1-4, input side first) panel (a) follows"))
    unit: int = dataclasses.field(
        default=0, metadata=option("which feature of that layer panel (a) draws"))
    population_size: int = dataclasses.field(
        default=10_000, metadata=option("training images the population statistics are "
                                        "computed on"))
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("moving_averages")
    verbose: int = verbose_field(0, "record")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "steps", "record_every", "batch_size", "population_size")
        check_divides(self, "record_every", "steps")
        if not 1 <= self.layer <= len(models.FIVE_LAYERS):
            raise ValueError(f"layer must be in 1..{len(models.FIVE_LAYERS)}, got {self.layer!r}")
        if not 0 <= self.unit < models.FIVE_LAYERS[self.layer - 1]:
            raise ValueError(f"unit must be in 0..{models.FIVE_LAYERS[self.layer - 1] - 1} for "
                             f"layer {self.layer}, got {self.unit!r}")
        check_verbose(self)


def build_model(momentum: float, debiased: bool) -> keras.Model:
    """Step 4.0's network with tfbn.BatchNorm(momentum, debiased) before each sigmoid."""
    return models.dense_network(
        models.FIVE_LAYERS, activation="sigmoid", bn="custom", bn_scale=True,
        momentum=momentum, debiased=debiased,
        name=f"step_4_0_momentum_{momentum:g}" + ("_debiased" if debiased else ""))


def population_statistics(model: keras.Model, layer: int, images) -> tuple[np.ndarray, ...]:
    """Mean and biased variance, per feature, of the input of BN layer `layer` over
    `images`, the layers below normalizing with the statistics of `images`."""
    probe = keras.Model(model.input, model.get_layer(f"dense{layer}_bn").input)
    inputs = keras.ops.convert_to_numpy(call_in_training_mode(probe, images))
    return inputs.mean(axis=0), inputs.var(axis=0)


def accuracy(probabilities, labels) -> float:
    return float(np.mean(np.argmax(probabilities, axis=-1) == np.asarray(labels)))


def batch_statistics_accuracy(model: keras.Model, images, labels, batch_size: int) -> float:
    """Test accuracy when every test batch of `batch_size` is normalized with its own
    statistics (training mode), on a copy, so the model's moving statistics stay put."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    predict = tf.function(lambda batch: twin(batch, training=True), reduce_retracing=True)
    predictions = [predict(images[start:start + batch_size])
                   for start in range(0, len(images), batch_size)]
    return accuracy(np.concatenate(predictions), labels)


class StatisticsRecorder(RecordEveryEpoch):
    """At the start and after every epoch (here `record_every` steps): the moving and the
    population statistics of one BN layer, and the test accuracy with batch statistics."""

    def __init__(self, layer: int, population_images, test_images, test_labels):
        super().__init__()
        self.layer = layer
        self.population_images = population_images
        self.test_images = test_images
        self.test_labels = test_labels
        self.records: dict[str, list] = {key: [] for key in (
            "steps", "moving_mean", "moving_variance", "population_mean",
            "population_variance", "batch_statistics_test_accuracy")}

    def _record(self):
        bn = self.model.get_layer(f"dense{self.layer}_bn")
        mean, variance = population_statistics(self.model, self.layer, self.population_images)
        test_probabilities = call_in_training_mode(self.model, self.test_images)
        values = {
            "steps": int(self.model.optimizer.iterations.numpy()),
            "moving_mean": keras.ops.convert_to_numpy(bn.moving_mean),
            "moving_variance": keras.ops.convert_to_numpy(bn.moving_variance),
            "population_mean": mean,
            "population_variance": variance,
            "batch_statistics_test_accuracy": accuracy(test_probabilities, self.test_labels),
        }
        for key, value in values.items():
            self.records[key].append(value)


def statistics_errors(records: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per record, averaged over the layer's features: |moving mean - population mean| in
    population standard deviations, and |moving variance / population variance - 1|."""
    moving_mean, moving_variance, population_mean, population_variance = (
        np.array(records[key]) for key in ("moving_mean", "moving_variance",
                                           "population_mean", "population_variance"))
    mean_error = np.abs(moving_mean - population_mean) / np.sqrt(population_variance)
    variance_error = np.abs(moving_variance / population_variance - 1.0)
    return mean_error.mean(axis=1), variance_error.mean(axis=1)


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    arrays = dataset_arrays(arrays, config.dataset)
    (x_train, _), (x_test, y_test) = arrays
    population_images = data.normalize_images(x_train[:config.population_size], flat=True)
    test_images = data.normalize_images(x_test, flat=True)
    test_labels = np.asarray(y_test)
    step = steps.load("4.0")
    print(f"moving averages: {config.steps} steps of batch {config.batch_size}, step 4.0 "
          f"network and optimizer; panel (a) follows BN layer {config.layer}")

    results = {}
    trained = {}
    for variant in VARIANTS:
        keras.utils.set_random_seed(config.seed)
        # A new pipeline for every run: iterating a dataset again reshuffles it differently,
        # and every run must see the same batches in the same order.
        train_dataset, _ = data.mnist_datasets(config.batch_size, flat=True,
                                               seed=config.seed, arrays=arrays)
        model = build_model(variant.momentum, variant.debiased)
        model.compile(optimizer=step.make_optimizer(), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        recorder = StatisticsRecorder(config.layer, population_images, test_images,
                                      test_labels)
        history, seconds = fit_in_records(
            model, train_dataset, config, callbacks=[recorder],
            validation_data=(test_images, test_labels),
            validation_batch_size=EVALUATION_BATCH_SIZE)
        records = recorder.records
        mean_error, variance_error = statistics_errors(records)
        moving_accuracy = [float(a) for a in history.history["val_accuracy"]]
        results[variant.name] = {
            "label": variant.label,
            "momentum": variant.momentum,
            "debiased": variant.debiased,
            "steps": records["steps"],
            "moving_statistics_test_accuracy": moving_accuracy,
            "batch_statistics_test_accuracy": records["batch_statistics_test_accuracy"],
            "mean_error": mean_error.tolist(),
            "variance_error": variance_error.tolist(),
            "unit_moving_mean": [float(v[config.unit]) for v in records["moving_mean"]],
            "unit_population_mean": [float(v[config.unit]) for v in records["population_mean"]],
            "unit_moving_variance": [float(v[config.unit])
                                     for v in records["moving_variance"]],
            "unit_population_variance": [float(v[config.unit])
                                         for v in records["population_variance"]],
            "final_train_loss": float(history.history["loss"][-1]),
            "training_seconds": round(seconds, 1),
        }
        trained[variant.name] = model
        print(f"{variant.label:>24}: test accuracy with moving statistics "
              + ", ".join(f"{a:.3f}" for a in moving_accuracy[:4])
              + f" ... {moving_accuracy[-1]:.4f} (after {config.record_every}, "
                f"{2 * config.record_every}, ... steps); with batch statistics "
                f"{records['batch_statistics_test_accuracy'][-1]:.4f}; final mean error "
                f"{mean_error[-1]:.3f} std, variance error {variance_error[-1]:.3f}; "
                f"{seconds:.0f} s")

    reference = trained[VARIANTS[0].name]
    batch_sizes = [size for size in BATCH_SIZES if size <= len(test_images)]
    started = time.perf_counter()
    batch_accuracy = {str(size): batch_statistics_accuracy(reference, test_images,
                                                           test_labels, size)
                      for size in batch_sizes}
    inference = {
        "variant": VARIANTS[0].name,
        "batch_statistics_test_accuracy": batch_accuracy,
        "moving_statistics_test_accuracy":
            results[VARIANTS[0].name]["moving_statistics_test_accuracy"][-1],
        "seconds": round(time.perf_counter() - started, 1),
    }
    print("batch statistics at inference, test accuracy by test batch size: "
          + ", ".join(f"{size}: {value:.4f}" for size, value in batch_accuracy.items())
          + f"; moving statistics: {inference['moving_statistics_test_accuracy']:.4f}")

    metrics = {"experiment": "moving_averages", "layer": config.layer, "unit": config.unit,
               "variants": results, "inference_batch_size": inference}
    save_results(config.outdir, metrics, _figure(results, inference, config), config)
    return metrics


def _figure(results: dict, inference: dict, config: Config):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(17, 9.5), layout="constrained")
    (mean_axes, variance_axes, error_axes), (batch_axes, debias_axes, momentum_axes) = (
        figure.subplots(2, 3))
    colors = dict(zip(results, ("tab:blue", "tab:green", "tab:orange")))
    reference = next(iter(results.values()))

    for axes, statistic in ((mean_axes, "mean"), (variance_axes, "variance")):
        axes.plot(reference["steps"], reference[f"unit_population_{statistic}"],
                  color="black", linewidth=2.5, label="population (true)")
        for name, result in results.items():
            axes.plot(result["steps"], result[f"unit_moving_{statistic}"], color=colors[name],
                      linestyle="--", label=f"moving, {result['label']}")
        axes.set(title=f"(a) {statistic} of feature {config.unit}, BN layer {config.layer}",
                 xlabel="training step", ylabel=statistic)
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    for name, result in results.items():
        error_axes.plot(result["steps"], result["mean_error"], color=colors[name],
                        label=f"mean, {result['label']}")
        error_axes.plot(result["steps"], result["variance_error"], color=colors[name],
                        linestyle=":", label=f"variance, {result['label']}")
    error_axes.set(title=f"(a) moving vs population, all features of BN layer {config.layer}",
                   xlabel="training step", yscale="log",
                   ylabel="|mean error| / std, |variance ratio - 1|")
    error_axes.legend(fontsize=8)
    error_axes.grid(alpha=0.3, which="both")

    sizes = list(inference["batch_statistics_test_accuracy"])
    values = list(inference["batch_statistics_test_accuracy"].values())
    bars = batch_axes.bar(range(len(sizes)), values, color="tab:gray",
                          label="batch statistics of each test batch")
    batch_axes.bar_label(bars, fmt="%.3f", fontsize=8)
    batch_axes.axhline(inference["moving_statistics_test_accuracy"], color="tab:blue",
                       label="moving statistics (any batch size)")
    batch_axes.set_xticks(range(len(sizes)), sizes)
    batch_axes.set(title=f"(b) predicting after {config.steps} steps (momentum 0.99)",
                   xlabel="test batch size", ylabel="test accuracy", ylim=(0, 1.25))
    batch_axes.legend(loc="upper left", fontsize=8)

    for axes, letter, names in (
            (debias_axes, "c", ("momentum_0.99", "momentum_0.99_debiased")),
            (momentum_axes, "d", ("momentum_0.99", "momentum_0.9"))):
        # Log steps: the averages differ in the first hundred steps, not after.
        axes.plot(reference["steps"][1:], reference["batch_statistics_test_accuracy"][1:],
                  color="black", linewidth=2.5, label="statistics of the test set as a batch")
        for name in names:
            result = results[name]
            axes.plot(result["steps"][1:], result["moving_statistics_test_accuracy"],
                      color=colors[name], marker=".", label=f"moving, {result['label']}")
        axes.set(title=f"({letter}) test accuracy in a short run",
                 xlabel="training step", xscale="log", ylabel="test accuracy")
        axes.legend(loc="lower right", fontsize=8)
        axes.grid(alpha=0.3, which="both")
    figure.suptitle(f"Moving averages at inference: step 4.0 network (BN before 5 sigmoids), "
                    f"batch {config.batch_size}, {config.steps} steps")
    return figure

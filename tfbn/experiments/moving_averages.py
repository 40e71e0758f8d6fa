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
0.0001 + 0.03 e^(-t/1000)) three times per seed, with the same initial weights and data
order, for `seeds` seeds (seed, seed + 1, ...):

    momentum 0.99            Keras's default, a plain exponential moving average
    momentum 0.99, debiased  tfbn.BatchNorm(debiased=True)
    momentum 0.9             a plain average that forgets ten times faster

Training normalizes with batch statistics only, so the three runs of a seed train the
very same weights; they differ in what they would predict with. Every `record_every`
steps the experiment records the moving mean and variance of one BN layer against the
true population statistics of its input (its mean and biased variance over
`population_size` training images, the layers below normalizing with that sample's
statistics), the test accuracy with the moving statistics, and, for reference, with the
statistics of the whole test set as one batch. At the end, each seed's momentum 0.99
network predicts with batch statistics on test batches of 1 to 1000 images. The figure:

    (a), (b) the mean and the variance of one feature of that BN layer, population and
        moving, for the first seed (feature 0 of one seed is not that of another);
    (c), (d) the moving mean's error and the moving variance's, averaged over the layer's
        features: mean over the seeds and a band of ± one standard deviation;
    (e) the test accuracy with batch statistics by test batch size, against the moving
        statistics, over the seeds;
    (f), (g) the test accuracy over training with each average (debiasing in (f), the
        lower momentum in (g)) and with the test set as one batch, over the seeds.

metrics.json holds every seed's curves and, as mean ± sd with every seed's value, the
final test accuracy (all test images), the accuracies and the errors after 25, 50, 100,
200, 500 and 1,000 steps (those that are records), the batch-size accuracies, and the test
set's noise floor (the binomial standard error at the best mean).

Default: 1,000 steps of batch 100, a record every 25, 3 seeds (3 min 43 s on 2 CPU
cores, measured 2026-12-02). A longer run, where all the
averages have long caught up:

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
    noise_floor, outdir_field, percent_spread, plot_mean_and_spread, plural, RecordEveryEpoch,
    save_results, seed_field, seeds_field, seeds_text, spread, spread_at_steps, verbose_field)

TITLE = TITLES["moving_averages"]

EVALUATION_BATCH_SIZE = 1000
BATCH_SIZES = (1, 4, 16, 64, 256, 1000)
# docs/experiments.md tables the accuracies and the errors at these steps.
TABLED_STEPS = (25, 50, 100, 200, 500, 1000)


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
        default=4, metadata=option("which BN layer (1-4, input side first) panels (a)-(d) "
                                   "follow"))
    unit: int = dataclasses.field(
        default=0, metadata=option("which feature of that layer panels (a) and (b) draw"))
    population_size: int = dataclasses.field(
        default=10_000, metadata=option("training images the population statistics are "
                                        "computed on"))
    seeds: int = seeds_field(3)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("moving_averages")
    verbose: int = verbose_field(0, "record")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "steps", "record_every", "batch_size", "population_size",
                                "seeds")
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



# The records of one run, one value per record (the moving-statistics accuracy has none at
# step 0: Keras validates after each epoch only).
CURVES = ("moving_statistics_test_accuracy", "batch_statistics_test_accuracy", "mean_error",
          "variance_error", "unit_moving_mean", "unit_population_mean",
          "unit_moving_variance", "unit_population_variance")


def train_variant(variant: Variant, seed: int, config: Config, arrays, make_optimizer,
                  population_images, test_images, test_labels) -> tuple[keras.Model, dict]:
    """One run of `variant` from `seed`: the trained model and its records."""
    keras.utils.set_random_seed(seed)  # every variant of a seed: the same kernels
    # A new pipeline for every run: iterating a dataset again reshuffles it differently,
    # and every run of a seed must see the same batches in the same order.
    train_dataset, _ = data.mnist_datasets(config.batch_size, flat=True, seed=seed,
                                           arrays=arrays)
    model = build_model(variant.momentum, variant.debiased)
    model.compile(optimizer=make_optimizer(), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    recorder = StatisticsRecorder(config.layer, population_images, test_images, test_labels)
    history, seconds = fit_in_records(
        model, train_dataset, config, callbacks=[recorder],
        validation_data=(test_images, test_labels),
        validation_batch_size=EVALUATION_BATCH_SIZE)
    records = recorder.records
    mean_error, variance_error = statistics_errors(records)
    return model, {
        "steps": records["steps"],
        "moving_statistics_test_accuracy": [float(a) for a in history.history["val_accuracy"]],
        "batch_statistics_test_accuracy": records["batch_statistics_test_accuracy"],
        "mean_error": mean_error.tolist(),
        "variance_error": variance_error.tolist(),
        **{f"unit_{key}": [float(values[config.unit]) for values in records[key]]
           for key in ("moving_mean", "population_mean", "moving_variance",
                       "population_variance")},
        "final_train_loss": float(history.history["loss"][-1]),
        "seconds": seconds,
    }


def summarize_variant(variant: Variant, runs: list[dict], config: Config) -> dict:
    """The metrics of one variant from its runs, one per seed."""
    record_steps = runs[0]["steps"]
    accuracy_steps = record_steps[1:]
    curves = {key: [run[key] for run in runs] for key in CURVES}
    tabled = (*TABLED_STEPS, config.steps)
    moving_accuracy = curves["moving_statistics_test_accuracy"]
    return {
        "label": variant.label,
        "momentum": variant.momentum,
        "debiased": variant.debiased,
        "steps": record_steps,
        "accuracy_steps": accuracy_steps,
        **curves,
        "final_test_accuracy": spread(curve[-1] for curve in moving_accuracy),
        "at_steps": {
            "moving_statistics_test_accuracy": spread_at_steps(accuracy_steps,
                                                               moving_accuracy, tabled),
            **{key: spread_at_steps(record_steps, curves[key], tabled)
               for key in ("batch_statistics_test_accuracy", "mean_error",
                           "variance_error")}},
        "final_train_loss": [run["final_train_loss"] for run in runs],
        "training_seconds": round(sum(run["seconds"] for run in runs), 1),
    }


def _print_variant(variant: dict) -> None:
    final = variant["final_test_accuracy"]
    at_steps = variant["at_steps"]
    indent = " " * 26
    print(f"{variant['label']:>24}: test accuracy with moving statistics "
          f"{percent_spread(final)} (seeds: "
          + ", ".join(f"{100 * value:.2f}" for value in final["values"]) + ")")
    print(f"{indent}after " + "; ".join(
        f"{int(step):,} steps {percent_spread(summary)}"
        for step, summary in at_steps["moving_statistics_test_accuracy"].items()))
    print(f"{indent}with the test set as one batch at the end "
          f"{percent_spread(list(at_steps['batch_statistics_test_accuracy'].values())[-1])}")
    mean_error, variance_error = (list(at_steps[key].values())[-1]
                                  for key in ("mean_error", "variance_error"))
    print(f"{indent}at the end: mean error {mean_error['mean']:.3f} ± {mean_error['sd']:.3f} "
          f"population sd, variance error {variance_error['mean']:.3f} ± "
          f"{variance_error['sd']:.3f}; {variant['training_seconds']:.0f} s")


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    arrays = dataset_arrays(arrays, config.dataset)
    (x_train, _), (x_test, y_test) = arrays
    population_images = data.normalize_images(x_train[:config.population_size], flat=True)
    test_images = data.normalize_images(x_test, flat=True)
    test_labels = np.asarray(y_test)
    make_optimizer = steps.load("4.0").make_optimizer
    seeds = list(range(config.seed, config.seed + config.seeds))
    batch_sizes = [size for size in BATCH_SIZES if size <= len(test_images)]
    print(f"moving averages: {config.steps} steps of batch {config.batch_size}, step 4.0 "
          f"network and optimizer, seeds {seeds}; panels (a)-(d) follow BN layer "
          f"{config.layer}")

    runs = {variant.name: [] for variant in VARIANTS}
    batch_accuracy = {size: [] for size in batch_sizes}  # per seed, momentum 0.99
    inference_seconds = 0.0
    for variant in VARIANTS:
        for seed in seeds:
            model, records = train_variant(variant, seed, config, arrays, make_optimizer,
                                           population_images, test_images, test_labels)
            runs[variant.name].append(records)
            if variant == VARIANTS[0]:
                started = time.perf_counter()
                for size in batch_sizes:
                    batch_accuracy[size].append(
                        batch_statistics_accuracy(model, test_images, test_labels, size))
                inference_seconds += time.perf_counter() - started

    results = {variant.name: summarize_variant(variant, runs[variant.name], config)
               for variant in VARIANTS}
    for result in results.values():
        _print_variant(result)
    inference = {
        "variant": VARIANTS[0].name,
        "batch_sizes": batch_sizes,
        "batch_statistics_test_accuracy": {str(size): spread(values)
                                           for size, values in batch_accuracy.items()},
        "moving_statistics_test_accuracy": results[VARIANTS[0].name]["final_test_accuracy"],
        "seconds": round(inference_seconds, 1),
    }
    print(f"batch statistics at inference ({VARIANTS[0].label}), test accuracy by test "
          "batch size: " + "; ".join(
              f"{size}: {percent_spread(summary)}"
              for size, summary in inference["batch_statistics_test_accuracy"].items())
          + f"; moving statistics: "
            f"{percent_spread(inference['moving_statistics_test_accuracy'])}")
    best = max(result["final_test_accuracy"]["mean"] for result in results.values())
    noise = noise_floor(best, len(test_labels))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")

    metrics = {"experiment": "moving_averages", "layer": config.layer, "unit": config.unit,
               "seeds": seeds, "test_size": int(len(test_labels)), "noise_floor": noise,
               "variants": results, "inference_batch_size": inference}
    save_results(config.outdir, metrics, _figure(results, inference, config, seeds), config)
    return metrics


def _cap_at_100(axes) -> None:
    """An accuracy axis in percent ends at 100 (mean + sd can pass it, an accuracy cannot)."""
    axes.set_ylim(top=min(axes.get_ylim()[1], 100))


def _figure(results: dict, inference: dict, config: Config, seeds: list[int]):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(20, 10.5), layout="constrained")
    grid = figure.add_gridspec(2, 12)
    mean_axes, variance_axes, mean_error_axes, variance_error_axes = (
        figure.add_subplot(grid[0, 3 * column:3 * column + 3]) for column in range(4))
    batch_axes, debias_axes, momentum_axes = (
        figure.add_subplot(grid[1, 4 * column:4 * column + 4]) for column in range(3))
    colors = dict(zip(results, ("tab:blue", "tab:green", "tab:orange")))
    reference = next(iter(results.values()))
    layer_text = f"BN layer {config.layer}"
    features = models.FIVE_LAYERS[config.layer - 1]

    # One seed: feature `unit` of one seed and of the next are unrelated features.
    for axes, letter, statistic in ((mean_axes, "a", "mean"), (variance_axes, "b", "variance")):
        axes.plot(reference["steps"], reference[f"unit_population_{statistic}"][0],
                  color="black", linewidth=2.5)
        for name, result in results.items():
            axes.plot(result["steps"], result[f"unit_moving_{statistic}"][0],
                      color=colors[name])
        axes.set(title=f"({letter}) {statistic} of feature {config.unit}, {layer_text}, "
                       f"seed {seeds[0]}",
                 xlabel="training step", ylabel=statistic)
        axes.grid(alpha=0.3)

    for axes, letter, key, name_text, ylabel in (
            (mean_error_axes, "c", "mean_error", "mean",
             "|moving mean - population mean| / population sd"),
            (variance_error_axes, "d", "variance_error", "variance",
             "|moving variance / population variance - 1|")):
        axes.set_yscale("log")  # before the bands, which depend on it
        for name, result in results.items():
            plot_mean_and_spread(axes, result["steps"], result[key], result["label"],
                                 colors[name])
        axes.set(title=f"({letter}) error of the moving {name_text}, {layer_text}\n"
                       f"(average over its {features} features)",
                 xlabel="training step", ylabel=ylabel, yscale="log")
        axes.grid(alpha=0.3, which="both")

    sizes = inference["batch_sizes"]
    per_seed = np.array([inference["batch_statistics_test_accuracy"][str(size)]["values"]
                         for size in sizes]).T
    # Not clipped: a marker at 100% would be cut in half by the top of the axes.
    plot_mean_and_spread(batch_axes, sizes, 100 * per_seed,
                         "batch statistics of each test batch", "tab:gray", marker="o",
                         clip_on=False)
    # Each mean below and right of its point, where the rising curve is not (the last
    # one below and left, inside the axes).
    for index, (size, accuracy) in enumerate(zip(sizes, 100 * per_seed.mean(axis=0))):
        last = index == len(sizes) - 1
        batch_axes.annotate(f"{accuracy:.1f}", (size, accuracy), textcoords="offset points",
                            xytext=(-5 if last else 5, -13), ha="right" if last else "left",
                            fontsize=8)
    moving = inference["moving_statistics_test_accuracy"]["values"]
    plot_mean_and_spread(batch_axes, [sizes[0], sizes[-1]],
                         [[100 * value] * 2 for value in moving],
                         "moving statistics (any batch size)", colors[inference["variant"]],
                         clip_on=False)
    batch_axes.set(title=f"(e) test accuracy by test batch size after "
                         f"{plural(config.steps, 'step')}, "
                         f"{results[inference['variant']]['label']}",
                   xlabel="test batch size", xscale="log", ylabel="test accuracy (%)",
                   ylim=(0, 100))
    batch_axes.set_xticks(sizes, [str(size) for size in sizes])
    batch_axes.minorticks_off()
    batch_axes.legend(loc="lower right", fontsize=8)
    batch_axes.grid(alpha=0.3)

    accuracy_steps = reference["accuracy_steps"]
    tick_steps = list(dict.fromkeys(step for step in (accuracy_steps[0], *TABLED_STEPS,
                                                      config.steps)
                                    if step in accuracy_steps))
    for axes, letter, title, names in (
            (debias_axes, "f", "debiasing", ("momentum_0.99", "momentum_0.99_debiased")),
            (momentum_axes, "g", "a lower momentum", ("momentum_0.99", "momentum_0.9"))):
        # Log steps: the averages differ in the first hundred steps, not after.
        plot_mean_and_spread(axes, accuracy_steps,
                             100 * np.array(reference["batch_statistics_test_accuracy"])[:, 1:],
                             "statistics of the test set as one batch", "black",
                             linewidth=2.5)
        for name in names:
            result = results[name]
            plot_mean_and_spread(axes, result["accuracy_steps"],
                                 100 * np.array(result["moving_statistics_test_accuracy"]),
                                 f"moving, {result['label']}", colors[name], marker=".")
        axes.set(title=f"({letter}) test accuracy over training: {title}",
                 xlabel="training step", xscale="log", ylabel="test accuracy (%)")
        axes.set_xticks(tick_steps, [f"{step:,}" for step in tick_steps])
        axes.minorticks_off()
        _cap_at_100(axes)
        axes.grid(alpha=0.3, which="both")
    # One legend for all panels but (e): each colour means the same thing everywhere.
    handles = [Line2D([], [], color="black", linewidth=2.5,
                      label="population statistics (a, b); the test set as one batch (f, g)")]
    handles += [Line2D([], [], color=colors[name], label=f"moving averages, {result['label']}")
                for name, result in results.items()]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    over_seeds = ("" if len(seeds) == 1
                  else f": mean (line) ± sd (band), (a) and (b) seed {seeds[0]}")
    figure.suptitle(f"Moving averages at inference: step 4.0 network (BN before 5 sigmoids), "
                    f"batch {config.batch_size}, {plural(config.steps, 'step')}; "
                    f"{seeds_text(seeds)}{over_seeds}")
    return figure

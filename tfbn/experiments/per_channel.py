"""Conv BN statistics per channel (over N, H, W) vs per activation (over N only).

The BN paper (section 3.2) normalizes a convolution's output with one mean and one
variance per feature map, over the mini-batch and all locations, "so that different
elements of the same feature map, at different locations, are normalized in the same way".
The alternative, a dense layer's rule applied to a conv layer, keeps one mean and variance
per activation (row, column and channel) over the batch alone.

The experiment trains step 4.2's conv network (`tutorials/experiment_per_channel.py`
writes it out) with its three conv BN layers per channel and per activation (the dense
layer's BN is per unit in both), for `seeds` seeds, each seed's two networks from the
same kernels on the same batches. It reports:
- the test accuracy on all test digits, mean ± sd, every seed's value, and the test set's
  noise floor;
- the number of statistics (moving means and variances) each network keeps;
- how noisy batch statistics are at the training batch size: on the first seed's trained
  networks, the inputs of each conv BN layer for `noise_batches` training batches; per
  feature, the standard deviation across batches of the batch mean divided by the
  feature's standard deviation over all those images (a batch mean of n independent values
  would give 1/sqrt(n): 0.1 per activation at batch 100), and the same for the batch
  variance relative to the feature's variance; the median over features.

BN's moving averages use momentum 0.9 by default, not Keras's 0.99, which needs more than
the default run's 200 steps (0.99**200 = 13% of the initial 0 and 1 would remain).

Default (about 3 minutes on 2 CPU cores): 10,000 training images, 2 epochs of batch 100,
Adam at 0.003, 3 seeds. The full setting:

    tfbn experiment per_channel --train-size 60000 --epochs 5 --seeds 5 --bn-momentum 0.99
"""

from __future__ import annotations

import dataclasses
import importlib
import time

import keras
import numpy as np

from tfbn.config import (check_fields, check_fraction, check_positive, check_positive_integers,
                         check_verbose, option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    batch_size_field, bn_momentum_field, dataset_field, noise_floor, outdir_field, percent_spread, plot_seeds,
    plural, prepare_training_subset, save_results, seed_field, seeds_field, spread, verbose_field)
from tfbn.layer import BATCH_NORM_TYPES

TITLE = TITLES["per_channel"]
LESSON = "tfbn.tutorials.experiment_per_channel"
VARIANTS = ("per_channel", "per_activation")
CONV_BN_LAYERS = ("conv1_bn", "conv2_bn", "conv3_bn")
EVALUATION_BATCH_SIZE = 1000


@dataclasses.dataclass
class Config:
    epochs: int = dataclasses.field(default=2, metadata=option("epochs per network"))
    train_size: int = dataclasses.field(
        default=10000, metadata=option("training images used (60000: all of them)"))
    batch_size: int = batch_size_field(100)
    learning_rate: float = dataclasses.field(
        default=0.003, metadata=option("Adam's learning rate, the same for both networks"))
    bn_momentum: float = bn_momentum_field()
    noise_batches: int = dataclasses.field(
        default=20, metadata=option("training batches whose statistics measure the noise"))
    seeds: int = seeds_field(3)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("per_channel")
    verbose: int = verbose_field(0, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "train_size", "batch_size", "seeds")
        check_positive(self, "learning_rate")
        check_fraction(self, "bn_momentum")
        if self.noise_batches < 2:
            raise ValueError(f"noise_batches must be at least 2, got {self.noise_batches!r}")
        check_verbose(self)


def statistics_count(model: keras.Model) -> int:
    """How many numbers BN keeps for inference: every moving mean and moving variance."""
    return sum(2 * int(np.prod(layer.moving_mean.shape)) for layer in model.layers
               if isinstance(layer, BATCH_NORM_TYPES))


def statistics_noise(model: keras.Model, images: np.ndarray, batch_size: int) -> dict:
    """For each conv BN layer: the median over its features of the standard deviation,
    across the batches of `images`, of a batch's mean (relative to the feature's standard
    deviation over all of `images`) and of its variance (relative to the feature's
    variance). A 4-D input is per channel (a batch's statistics over N, H and W); a 2-D
    one, the flattened map, per activation (over N)."""
    layers = [model.get_layer(name) for name in CONV_BN_LAYERS]
    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    batches = len(images) // batch_size
    inputs = probe.predict(images[:batches * batch_size], batch_size=batch_size, verbose=0)
    noise = {}
    for name, values in zip(CONV_BN_LAYERS, inputs):
        values = values.astype(np.float64)
        # [batches, batch_size * positions, features]: a batch's statistics reduce axis 1.
        grouped = values.reshape(batches, -1, values.shape[-1])
        everything = grouped.reshape(-1, values.shape[-1])
        spread_of_feature = everything.std(axis=0)
        alive = spread_of_feature > 1e-6 * max(spread_of_feature.max(), 1e-30)
        mean_noise = grouped.mean(axis=1).std(axis=0)[alive] / spread_of_feature[alive]
        variance_noise = (grouped.var(axis=1).std(axis=0)[alive]
                          / np.square(spread_of_feature[alive]))
        noise[name] = {"features": int(values.shape[-1]),
                       "values_per_batch_statistic": int(grouped.shape[1]),
                       "mean_noise": float(np.median(mean_noise)),
                       "variance_noise": float(np.median(variance_noise))}
    return noise


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    lesson = importlib.import_module(LESSON)
    subset = prepare_training_subset(config, arrays)
    seeds = list(range(config.seed, config.seed + config.seeds))
    noise_images = subset.train_images[:config.noise_batches * config.batch_size]
    print(f"per_channel experiment: {len(subset.x_train)} training images, {config.epochs} "
          f"epochs, seeds {seeds}")
    variants = []
    for statistics in VARIANTS:
        accuracies, seconds, noise = [], 0.0, None
        for seed in seeds:
            keras.utils.set_random_seed(seed)  # the same kernels for both networks
            model = lesson.build_model(statistics, config.bn_momentum)
            model.compile(optimizer=lesson.make_optimizer(config.learning_rate),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            started = time.perf_counter()
            model.fit(subset.train_dataset(config.batch_size, seed), epochs=config.epochs,
                      verbose=config.verbose)
            seconds += time.perf_counter() - started
            _, accuracy = model.evaluate(subset.test_images, subset.y_test, verbose=0,
                                         batch_size=EVALUATION_BATCH_SIZE)
            accuracies.append(accuracy)
            if noise is None:
                noise = statistics_noise(model, noise_images, config.batch_size)
        summary = spread(accuracies)
        variants.append({"statistics": statistics, "test_accuracy": summary,
                         "statistics_count": statistics_count(model), "noise": noise,
                         "training_seconds": round(seconds, 1)})
        print(f"{statistics:<15} {percent_spread(summary)} (seeds: "
              f"{', '.join(f'{100 * a:.2f}' for a in accuracies)}); "
              f"{statistics_count(model):,} statistics; noise of a batch mean: "
              + ", ".join(f"{name} {layer['mean_noise']:.3f}" for name, layer in noise.items()))
    best = max(variant["test_accuracy"]["mean"] for variant in variants)
    noise = noise_floor(best, len(subset.y_test))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")
    metrics = {"experiment": "per_channel", "train_size": int(len(subset.x_train)),
               "test_size": int(len(subset.y_test)), "seeds": seeds,
               "noise_floor": noise, "variants": variants}
    save_results(config.outdir, metrics, _figure(variants, config, noise, seeds), config)
    return metrics


def _label(variant: dict) -> str:
    return f"{variant['statistics'].replace('_', ' ')}\n{variant['statistics_count']:,} statistics"


def _figure(variants: list[dict], config: Config, noise: float, seeds: list[int]):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.2))
    accuracy_axes, mean_axes, variance_axes = figure.subplots(1, 3)
    plot_seeds(accuracy_axes, [_label(variant) for variant in variants],
               [variant["test_accuracy"] for variant in variants], noise)
    accuracy_axes.set_ylabel("test accuracy (%)")
    accuracy_axes.set_title(f"(a) test accuracy, seeds {seeds[0]}-{seeds[-1]}", fontsize=10)
    width = 0.38
    positions = np.arange(len(CONV_BN_LAYERS))
    for axes, key, title in ((mean_axes, "mean_noise", "(b) a batch's mean"),
                             (variance_axes, "variance_noise", "(c) a batch's variance")):
        for index, variant in enumerate(variants):
            heights = [variant["noise"][name][key] for name in CONV_BN_LAYERS]
            bars = axes.bar(positions + (index - 0.5) * width, heights, width,
                            color=f"C{index}", label=variant["statistics"].replace("_", " "))
            axes.bar_label(bars, fmt="%.3f", fontsize=7)
        if key == "mean_noise":
            axes.axhline(1 / np.sqrt(config.batch_size), color="0.4", linestyle="--",
                         linewidth=1, label=f"1/sqrt({config.batch_size}): the mean of "
                                            f"{config.batch_size} independent values")
        axes.set_xticks(positions, CONV_BN_LAYERS)
        axes.set_ylabel("sd across batches / the feature's "
                        + ("sd" if key == "mean_noise" else "variance")
                        + "\n(median over features)")
        axes.set_title(f"{title}: its noise at batch {config.batch_size}", fontsize=10)
        axes.set_ylim(0, 1.45 * axes.get_ylim()[1])  # room for the legend above the bars
        axes.legend(fontsize=8, loc="upper left")
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle(f"BN statistics per channel or per activation: step 4.2's conv net, "
                    f"{config.train_size:,} images, {plural(config.epochs, 'epoch')}", fontsize=11)
    figure.tight_layout()
    return figure

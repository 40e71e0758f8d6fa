"""BN before or after the activation, with or without the bias before it.

The BN paper puts BN between the weighted sum and the nonlinearity, and drops the bias
there (BN's offset replaces it); the codelab teaches the same. Many networks put BN after
the activation instead. The experiment trains the codelab's five-layer dense network
(784 -> 200 -> 100 -> 60 -> 30 -> 10, `tutorials/experiment_placement.py` writes it out)
eight ways: ReLU or sigmoid, BN before or after it, with or without a bias in the dense
layer, each from the same initial weights and the same batches for a seed, for `seeds`
seeds. It reports the test accuracy on all 10,000 test digits (mean ± sd over the seeds,
every seed's number, and the test set's own noise floor) and each network's parameter
count.

Before BN, a bias is exactly cancelled: BN subtracts the batch mean, bias included, so its
gradient is zero and it stays at its initial 0. After the activation, the bias is the only
offset the activation sees.

BN's moving averages use momentum 0.9 by default, not Keras's 0.99: after the default
run's 300 steps a momentum-0.99 average still describes the weights of about 100 steps
before, and at this learning rate that costs whole points of test accuracy (a first run
with 0.99 gave seed-to-seed spreads of 0.3-2.4 points).

Default (about 5 minutes on 2 CPU cores): 10,000 training images, 3 epochs of batch 100,
Adam at 0.003, 5 seeds (the differences are under a point). The full setting:

    tfbn experiment placement --train-size 60000 --epochs 10 --bn-momentum 0.99
"""

from __future__ import annotations

import dataclasses
import importlib
import time

import keras

from tfbn.config import (check_fields, check_fraction, check_positive, check_positive_integers,
                         check_verbose, option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    batch_size_field, bn_momentum_field, dataset_field, noise_floor, outdir_field, percent_spread, plot_seeds,
    plural, prepare_training_subset, save_results, seed_field, seeds_field, spread, verbose_field)

TITLE = TITLES["placement"]
LESSON = "tfbn.tutorials.experiment_placement"
ACTIVATIONS = ("relu", "sigmoid")
PLACEMENTS = ("before", "after")
EVALUATION_BATCH_SIZE = 1000


@dataclasses.dataclass
class Config:
    epochs: int = dataclasses.field(default=3, metadata=option("epochs per network"))
    train_size: int = dataclasses.field(
        default=10000, metadata=option("training images used (60000: all of them)"))
    batch_size: int = batch_size_field(100)
    learning_rate: float = dataclasses.field(
        default=0.003, metadata=option("Adam's learning rate, the same for every network"))
    bn_momentum: float = bn_momentum_field()
    seeds: int = seeds_field(5)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("placement")
    verbose: int = verbose_field(0, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "train_size", "batch_size", "seeds")
        check_positive(self, "learning_rate")
        check_fraction(self, "bn_momentum")
        check_verbose(self)


def variant_name(activation: str, placement: str, use_bias: bool) -> str:
    order = f"BN -> {activation}" if placement == "before" else f"{activation} -> BN"
    return f"{order}, {'bias' if use_bias else 'no bias'}"


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    lesson = importlib.import_module(LESSON)
    subset = prepare_training_subset(config, arrays)
    x_test = subset.test_images.reshape(len(subset.test_images), -1)
    seeds = list(range(config.seed, config.seed + config.seeds))
    print(f"placement experiment: {len(subset.x_train)} training images, {config.epochs} "
          f"epochs, seeds {seeds}, 8 networks")
    variants = []
    for activation in ACTIVATIONS:
        for placement in PLACEMENTS:
            for use_bias in (False, True):
                name = variant_name(activation, placement, use_bias)
                accuracies, seconds = [], 0.0
                for seed in seeds:
                    keras.utils.set_random_seed(seed)  # the same kernels for every variant
                    model = lesson.build_model(activation, placement, use_bias,
                                               config.bn_momentum)
                    model.compile(optimizer=lesson.make_optimizer(config.learning_rate),
                                  loss="sparse_categorical_crossentropy",
                                  metrics=["accuracy"])
                    started = time.perf_counter()
                    model.fit(lesson.flat(subset.train_dataset(config.batch_size, seed)),
                              epochs=config.epochs, verbose=config.verbose)
                    seconds += time.perf_counter() - started
                    _, accuracy = model.evaluate(x_test, subset.y_test, verbose=0,
                                                 batch_size=EVALUATION_BATCH_SIZE)
                    accuracies.append(accuracy)
                summary = spread(accuracies)
                variants.append({"name": name, "activation": activation,
                                 "placement": placement, "use_bias": use_bias,
                                 "parameters": int(model.count_params()),
                                 "test_accuracy": summary,
                                 "training_seconds": round(seconds, 1)})
                print(f"{name:<28} {percent_spread(summary)}  "
                      f"(seeds: {', '.join(f'{100 * a:.2f}' for a in accuracies)})")
    best = max(variant["test_accuracy"]["mean"] for variant in variants)
    noise = noise_floor(best, len(subset.y_test))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")
    metrics = {"experiment": "placement", "train_size": int(len(subset.x_train)),
               "test_size": int(len(subset.y_test)), "seeds": seeds,
               "noise_floor": noise, "variants": variants}
    save_results(config.outdir, metrics, _figure(variants, config, noise, seeds), config)
    return metrics


def _figure(variants: list[dict], config: Config, noise: float, seeds: list[int]):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2))
    panels = figure.subplots(1, 2)
    for axes, activation in zip(panels, ACTIVATIONS):
        chosen = [variant for variant in variants if variant["activation"] == activation]
        labels = [variant["name"].replace(", ", "\n") for variant in chosen]
        plot_seeds(axes, labels, [variant["test_accuracy"] for variant in chosen], noise,
                   colors=["C0", "C0", "C1", "C1"])
        axes.set_title(f"({'ab'[ACTIVATIONS.index(activation)]}) {activation}")
        axes.set_ylabel("test accuracy (%)")
    figure.suptitle(f"BN before or after the activation: the five-layer dense net, "
                    f"{config.train_size:,} images, {plural(config.epochs, 'epoch')}, seeds "
                    f"{seeds[0]}-{seeds[-1]} (dots) and mean ± sd (bars)", fontsize=10)
    figure.tight_layout()
    return figure

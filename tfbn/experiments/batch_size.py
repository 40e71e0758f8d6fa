"""Small training batches: BN vs renorm vs ghost batches vs group and layer norm.

The pitfall (keras#7177, tensorflow#33031): BN trains with the statistics of its batch,
and with a handful of images these are noisy, in a dense layer degenerate (two values
normalized are -1 and +1, whatever they were), and unlike the moving statistics that
inference uses. Batch renormalization (Ioffe 2017) corrects each batch's statistics
towards the moving ones; group norm (Wu and He 2018) and layer norm (Ba et al. 2016)
normalize each image with its own statistics and do not depend on the batch at all.

The experiment trains a conv net a third as wide as step 4.2's (conv 8 k6 s1, 16 k5 s2,
32 k4 s2, dense 100, each followed by the normalizer and a ReLU;
`tutorials/experiment_batch_size.py` writes it out) with BN, BN with renorm (r clipped to
[1/3, 3], d to [-5, 5]), group norm (4 groups), layer norm and no normalization, at each
training batch size of `batch_sizes`. Ghost batches (`ghost_batch_norm`, BN with
`virtual_batch_size=ghost_batch_size`) only exist for batches larger than the group, so
they run at the batch sizes that are multiples of it and larger; they are not in the
default list. Every run sees the same images for the same epochs (an epoch's last,
smaller batch is dropped), so the number of images seen is the same at every batch size
and a batch of 2 takes 64 times the steps of a batch of 128.

The learning rate: Adam at `learning_rate` for batch 32, times sqrt(batch / 32) (0.0005
at batch 2, 0.004 at batch 128): Malladi et al. (2022) derive this square-root rule for
Adam, as the linear rule is for SGD; it keeps the progress and the noise per epoch about
the same, where one constant rate would make the batch-2 runs noisier or leave the 46 steps of a
batch-128 run far from trained (`--learning-rate-scaling constant` tries it). At a batch
size every normalizer gets the same rate. BN's (and renorm's) moving averages span
`moving_average_images` images at every batch size, momentum = 1 - batch /
moving_average_images (0.998 at batch 2, 0.872 at batch 128), so that inference gets as
good an average at every size and the comparison is about the batch statistics of
training.

For a seed, all runs start from the same kernels (`keras.utils.set_random_seed(seed)`
before building) and the runs at one batch size see the same batches. Each run is
evaluated on all test digits in inference mode (BN and renorm with their moving
statistics); reported: the mean ± sd over `seeds` seeds, every seed's value, each
normalizer's difference to no normalization paired by seed, and the test set's noise floor.

Default (about 6 minutes on 2 quiet CPU cores, two to three times that when other jobs
share them): 3,000 training images, 2 epochs, batch sizes 2, 8, 32 and 128, five
normalizers, 3 seeds: 60 runs of 6,000 images each. A step at batch 2 costs a few
milliseconds, nearly as much as one at batch 30, so the 3,000 steps of the batch-2 runs
and each run's 3-4 s of tracing and evaluation take most of the time. The full setting,
every batch size and normalizer, 30,000 images per run (about 35 minutes):

    tfbn experiment batch_size --train-size 10000 --epochs 3 \\
        --batch-sizes 2,4,8,16,32,128 \\
        --normalizers batch_norm,renorm,ghost_batch_norm,group_norm,layer_norm,none
"""

from __future__ import annotations

import dataclasses
import importlib
import time

import keras
import numpy as np

from tfbn.config import (check_fields, check_positive, check_positive_integers, check_verbose,
                         option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    dataset_field, noise_floor, outdir_field, percent_spread, plural, prepare_training_subset,
    save_results, seed_field, seeds_field, spread, verbose_field)

TITLE = TITLES["batch_size"]
LESSON = "tfbn.tutorials.experiment_batch_size"
NORMALIZERS = ("batch_norm", "renorm", "ghost_batch_norm", "group_norm", "layer_norm", "none")
DEFAULT_NORMALIZERS = ("batch_norm", "renorm", "group_norm", "layer_norm", "none")
STYLES = {"batch_norm": ("C0", "-", "o"), "renorm": ("C1", "-", "s"),
          "ghost_batch_norm": ("C4", "-", "D"), "group_norm": ("C2", "-", "^"),
          "layer_norm": ("C3", "-", "v"), "none": ("0.3", "--", "x")}
EVALUATION_BATCH_SIZE = 1000
# Steps per call of the compiled training function: at batch 2 the Python round trip of a
# step costs more than its arithmetic. The steps and their updates are the same.
STEPS_PER_EXECUTION = 32


def parse_batch_sizes(text: str) -> list[int]:
    """"2,8,32" -> [2, 8, 32] (sorted); a ValueError naming the option otherwise."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"batch_sizes must be comma-separated integers, got {text!r}") from None
    if not all(size >= 1 for size in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"batch_sizes must be distinct positive integers, got {text!r}")
    return sorted(sizes)


def parse_normalizers(text: str) -> list[str]:
    """The normalizers named in `text`, in the order of NORMALIZERS."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in NORMALIZERS]
    if unknown or not names:
        raise ValueError(f"normalizers must name some of {', '.join(NORMALIZERS)}; "
                         f"got {text!r}")
    return [name for name in NORMALIZERS if name in names]


@dataclasses.dataclass
class Config:
    epochs: int = dataclasses.field(default=2, metadata=option("epochs per run, at every "
                                                               "batch size"))
    train_size: int = dataclasses.field(
        default=3000, metadata=option("training images used (60000: all of them)"))
    batch_sizes: str = dataclasses.field(
        default="2,8,32,128", metadata=option("comma-separated training batch sizes"))
    normalizers: str = dataclasses.field(
        default=",".join(DEFAULT_NORMALIZERS),
        metadata=option("comma-separated normalizers to train, from: "
                        + ", ".join(NORMALIZERS)))
    learning_rate: float = dataclasses.field(
        default=0.002, metadata=option("Adam's learning rate at batch 32 (see "
                                       "--learning-rate-scaling)"))
    learning_rate_scaling: str = dataclasses.field(
        default="sqrt", metadata=option("the rate at batch B: learning_rate * sqrt(B / 32), "
                                        "or learning_rate at every size",
                                        ("sqrt", "constant")))
    moving_average_images: int = dataclasses.field(
        default=1000, metadata=option("images BN's moving averages span at every batch size: "
                                      "momentum = 1 - batch size / this"))
    ghost_batch_size: int = dataclasses.field(
        default=16, metadata=option("images per ghost batch (ghost_batch_norm runs at the "
                                    "batch sizes that are larger multiples of it)"))
    seeds: int = seeds_field(3)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("batch_size")
    verbose: int = verbose_field(0, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "train_size", "moving_average_images",
                                "ghost_batch_size", "seeds")
        check_positive(self, "learning_rate")
        check_verbose(self)
        largest = max(parse_batch_sizes(self.batch_sizes))
        if largest > self.train_size:
            raise ValueError(f"train_size must be at least the largest batch size "
                             f"({largest}), got {self.train_size!r}")
        if self.moving_average_images <= largest:
            raise ValueError(f"moving_average_images must exceed the largest batch size "
                             f"({largest}), got {self.moving_average_images!r}")
        if "ghost_batch_norm" in parse_normalizers(self.normalizers) and not \
                self.batch_sizes_for("ghost_batch_norm"):
            raise ValueError(f"ghost_batch_norm needs a batch size that is a larger multiple "
                             f"of ghost_batch_size ({self.ghost_batch_size}); got "
                             f"batch_sizes {self.batch_sizes!r}")

    def batch_sizes_for(self, normalizer: str) -> list[int]:
        """The batch sizes `normalizer` trains at: all of them, but ghost batches only where
        the batch is a multiple of the ghost batch and larger."""
        sizes = parse_batch_sizes(self.batch_sizes)
        if normalizer != "ghost_batch_norm":
            return sizes
        return [size for size in sizes
                if size > self.ghost_batch_size and size % self.ghost_batch_size == 0]


def label(normalizer: str, config: Config) -> str:
    return {"batch_norm": "BN", "renorm": "BN with renorm",
            "ghost_batch_norm": f"BN, ghost batches of {config.ghost_batch_size}",
            "group_norm": "group norm", "layer_norm": "layer norm",
            "none": "no normalization"}[normalizer]


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    lesson = importlib.import_module(LESSON)
    subset = prepare_training_subset(config, arrays)
    seeds = list(range(config.seed, config.seed + config.seeds))
    normalizers = parse_normalizers(config.normalizers)
    print(f"batch_size experiment: {len(subset.x_train)} training images, "
          f"{plural(config.epochs, 'epoch')} at batch sizes {config.batch_sizes}, seeds {seeds}, "
          f"normalizers {', '.join(normalizers)}")
    variants = []
    for normalizer in normalizers:
        runs, parameters = [], None
        for batch_size in config.batch_sizes_for(normalizer):
            momentum = lesson.bn_momentum(batch_size, config.moving_average_images)
            learning_rate = lesson.scaled_learning_rate(config.learning_rate, batch_size,
                                                        config.learning_rate_scaling)
            steps = config.epochs * (len(subset.x_train) // batch_size)
            accuracies, seconds = [], 0.0
            for seed in seeds:
                keras.utils.set_random_seed(seed)  # the same kernels for every normalizer
                model = lesson.build_model(normalizer, momentum, config.ghost_batch_size)
                model.compile(optimizer=lesson.make_optimizer(learning_rate),
                              loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                              steps_per_execution=STEPS_PER_EXECUTION)
                started = time.perf_counter()
                model.fit(lesson.full_batches(subset.train_dataset(batch_size, seed),
                                              batch_size, len(subset.x_train)),
                          epochs=config.epochs, verbose=config.verbose)
                seconds += time.perf_counter() - started
                _, accuracy = model.evaluate(subset.test_images, subset.y_test, verbose=0,
                                             batch_size=EVALUATION_BATCH_SIZE)
                accuracies.append(accuracy)
                parameters = int(model.count_params())
            summary = spread(accuracies)
            runs.append({"batch_size": batch_size, "learning_rate": learning_rate,
                         "momentum": momentum, "steps": steps,
                         "images_seen": steps * batch_size, "test_accuracy": summary,
                         "training_seconds": round(seconds, 1)})
            print(f"{label(normalizer, config):<26} batch {batch_size:>4}: "
                  f"{percent_spread(summary)} (seeds: "
                  f"{', '.join(f'{100 * a:.2f}' for a in accuracies)}); {steps} steps at "
                  f"rate {learning_rate:.2g}, {seconds / len(seeds):.0f} s per run")
        variants.append({"normalizer": normalizer, "label": label(normalizer, config),
                         "parameters": parameters, "runs": runs})
    _add_differences_to_none(variants)
    best = max(result["test_accuracy"]["mean"]
               for variant in variants for result in variant["runs"])
    noise = noise_floor(best, len(subset.y_test))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")
    metrics = {"experiment": "batch_size", "train_size": int(len(subset.x_train)),
               "test_size": int(len(subset.y_test)), "epochs": config.epochs,
               "batch_sizes": parse_batch_sizes(config.batch_sizes), "seeds": seeds,
               "noise_floor": noise, "variants": variants}
    save_results(config.outdir, metrics, _figure(variants, config, noise, seeds), config)
    return metrics


def _add_differences_to_none(variants: list[dict]) -> None:
    """Each run's `difference_to_none`: its accuracy minus no normalization's at the same
    batch size, seed by seed (the same kernels and batches), as a `spread`."""
    baseline = {result["batch_size"]: result["test_accuracy"]["values"]
                for variant in variants if variant["normalizer"] == "none"
                for result in variant["runs"]}
    for variant in variants:
        for result in variant["runs"]:
            if variant["normalizer"] != "none" and result["batch_size"] in baseline:
                result["difference_to_none"] = spread(np.subtract(
                    result["test_accuracy"]["values"], baseline[result["batch_size"]]))


def _figure(variants: list[dict], config: Config, noise: float, seeds: list[int]):
    from matplotlib.figure import Figure

    compared = [variant for variant in variants
                if any("difference_to_none" in result for result in variant["runs"])]
    figure = Figure(figsize=(13 if compared else 7, 4.8))
    panels = figure.subplots(1, 2 if compared else 1, squeeze=False)[0]
    offsets = {variant["normalizer"]: 0.06 * (index - (len(variants) - 1) / 2)
               for index, variant in enumerate(variants)}

    def plot(axes, variant, key):
        color, linestyle, marker = STYLES[variant["normalizer"]]
        chosen = [result for result in variant["runs"] if key in result]
        x = np.log2([result["batch_size"] for result in chosen]) + offsets[variant["normalizer"]]
        means = np.array([100 * result[key]["mean"] for result in chosen])
        sds = np.array([100 * result[key]["sd"] for result in chosen])
        axes.plot(x, means, color=color, linestyle=linestyle, marker=marker, markersize=5,
                  label=variant["label"])
        axes.fill_between(x, means - sds, means + sds, color=color, alpha=0.15, linewidth=0)
        for position, result in zip(x, chosen):
            values = 100 * np.array(result[key]["values"])
            axes.plot(np.full(len(values), position), values, ".", color=color, alpha=0.5)

    accuracy_axes = panels[0]
    for variant in variants:
        plot(accuracy_axes, variant, "test_accuracy")
    best = 100 * max(result["test_accuracy"]["mean"] for variant in variants
                     for result in variant["runs"])
    accuracy_axes.axhspan(best - 100 * noise, best + 100 * noise, color="0.8", zorder=0,
                          label=f"best mean ± the test set's noise ({100 * noise:.2f} points)")
    accuracy_axes.set_title("(a) test accuracy (inference mode)", fontsize=10)
    accuracy_axes.set_ylabel("test accuracy (%)")
    if compared:
        difference_axes = panels[1]
        for variant in compared:
            plot(difference_axes, variant, "difference_to_none")
        difference_axes.axhline(0, color=STYLES["none"][0], linestyle="--", linewidth=1,
                                label="no normalization")
        difference_axes.axhspan(-100 * noise, 100 * noise, color="0.8", zorder=0,
                                label=f"± the test set's noise ({100 * noise:.2f} points)")
        difference_axes.set_title("(b) minus no normalization, seed by seed", fontsize=10)
        difference_axes.set_ylabel("test accuracy difference (points)")
    sizes = parse_batch_sizes(config.batch_sizes)
    for axes in panels:
        axes.set_xticks(np.log2(sizes), [str(size) for size in sizes])
        axes.set_xlabel("training batch size (log scale)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="best")
    images = config.epochs * config.train_size
    figure.suptitle(f"Small training batches: the narrow conv net, {config.train_size:,} "
                    f"images x {plural(config.epochs, 'epoch')} at every batch size "
                    f"(about {images:,} images seen), Adam, {config.learning_rate_scaling} rate scaling; "
                    f"seeds {seeds[0]}-{seeds[-1]} (dots), mean ± sd (bands)", fontsize=10)
    figure.tight_layout()
    return figure

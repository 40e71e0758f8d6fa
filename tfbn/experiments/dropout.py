"""Dropout vs batch norm: does BN regularize enough that dropout can go?

The claim (Ioffe & Szegedy 2015, section 4.2.1): BN adds noise of its own (each example
is normalized with its batch's statistics), so a BN network needs less dropout, or none.
A related warning (Li et al. 2019, "variance shift"): dropout placed *before* BN changes
the variance BN learns during training, and that variance is wrong at test time, when
dropout is off.

The experiment trains the step 4.2 convolutional network (6x6x24, 5x5x48 /2, 4x4x64 /2,
dense 200, ReLU) five ways, everything else equal (for a seed, the same initial weights
where the shapes agree and the same data order; Adam with the step 3.x schedule
0.0001 + 0.003 e^(-t/T) compressed to the run: the codelab's 10,000 steps span 5 time
constants T = 2,000, so T is a fifth of the run's steps here too, and every run ends on
the floor rate, however short):

    neither            no BN, no dropout
    dropout            no BN, dropout after the dense layer's ReLU (step 3.1)
    bn                 BN after every convolution and the dense layer, no dropout
    dropout_before_bn  dense -> dropout -> BN -> ReLU
    dropout_after_bn   dense -> BN -> ReLU -> dropout (step 4.2)

each for `seeds` seeds, and reports the test accuracy on all 10,000 test digits and the
train/test gap, in accuracy and in loss, with the training accuracy measured in inference
mode (dropout off, BN on moving statistics) on the very examples it trained on: the mean
± sd over the seeds, every seed's number, and the test set's own noise floor. A training
subset makes overfitting, and so the gap, visible in a short run. The accuracy after each
epoch, for the curves, is measured on the first `evaluation_size` test images only
(`--evaluation-size 10000` measures it on all of them, for about 40% more time).

The BN layers' moving averages use momentum 0.9 by default, not the codelab's 0.99: a
short run has too few steps for 0.99 (after the 50 steps of a first epoch 0.99^50 = 61% of
the moving statistics is still the initial 0 and 1, after 300 steps 5%), and the test
accuracy of the BN variants, computed with those statistics, then measures the moving
averages' lag rather than BN (experiment moving_averages is about that; with 0.99 the
default run's "BN only" net tests at 86.70 ± 12.02% over 5 seeds, from 67.21% to 96.42%,
instead of 98.12 ± 0.06%).

Default (10 min 10 s on 2 CPU cores, measured 2026-12-02):
5,000 training images, 6 epochs of batch 100, 5 seeds (the differences are under a
point). The full setting, the codelab's 17 epochs on all 60,000 images (about 20 minutes
per variant and seed on 2 CPU cores):

    tfbn experiment dropout --train-size 60000 --epochs 17 --bn-momentum 0.99
"""

from __future__ import annotations

import dataclasses
import math
import textwrap

import keras
import numpy as np

from tfbn import models, steps
from tfbn.config import (
    check_fields, check_fraction, check_positive_integers, check_verbose, option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    TrainingSubset, batch_size_field, bn_field, bn_momentum_field, dataset_field,
    evaluation_size_field, noise_floor, outdir_field, percent_spread, plot_mean_and_spread,
    plot_seeds, plural, prepare_training_subset, save_results, seed_field, seeds_field, spread,
    verbose_field)
from tfbn.schedules import DecayToFloor

TITLE = TITLES["dropout"]

DENSE_UNITS = 200
EVALUATION_BATCH_SIZE = 500
CODELAB_ITERATIONS = 10_000
# A run's final numbers, each kept per seed and summarized as a `spread`.
FINAL_NUMBERS = ("test_accuracy", "train_accuracy", "accuracy_gap", "test_loss",
                 "train_loss", "loss_gap")


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    label: str
    uses_bn: bool
    dropout: str | None  # None, "before_bn" or "after_activation"
    color: str


VARIANTS = (
    Variant("neither", "neither", False, None, "tab:gray"),
    Variant("dropout", "dropout only", False, "after_activation", "tab:orange"),
    Variant("bn", "BN only", True, None, "tab:blue"),
    Variant("dropout_before_bn", "dropout before BN", True, "before_bn", "tab:red"),
    Variant("dropout_after_bn", "BN, dropout after it", True, "after_activation", "tab:green"),
)


@dataclasses.dataclass
class Config:
    epochs: int = dataclasses.field(default=6, metadata=option("epochs per variant"))
    train_size: int = dataclasses.field(
        default=5000, metadata=option("training images used (60000: all of them)"))
    batch_size: int = batch_size_field(100)
    dropout_rate: float = dataclasses.field(
        default=0.25, metadata=option("dropout rate where there is dropout (the codelab's)"))
    bn: str = bn_field()
    bn_momentum: float = bn_momentum_field()
    variants: str = dataclasses.field(
        default=",".join(variant.name for variant in VARIANTS),
        metadata=option("comma-separated variants to train, from: "
                        + ", ".join(variant.name for variant in VARIANTS)))
    evaluation_size: int = evaluation_size_field()
    seeds: int = seeds_field(5)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("dropout")
    verbose: int = verbose_field(2, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "train_size", "batch_size", "evaluation_size",
                                "seeds")
        if not 0 < self.dropout_rate < 1:
            raise ValueError(f"dropout_rate must be in (0, 1), got {self.dropout_rate!r}")
        check_fraction(self, "bn_momentum")
        check_verbose(self)
        self.chosen_variants()

    def chosen_variants(self) -> tuple[Variant, ...]:
        """The variants named in `variants`, in the order of VARIANTS."""
        names = [name.strip() for name in self.variants.split(",") if name.strip()]
        known = {variant.name for variant in VARIANTS}
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise ValueError(f"variants must name some of {', '.join(sorted(known))}; "
                             f"got {self.variants!r}")
        return tuple(variant for variant in VARIANTS if variant.name in names)


def build_model(variant: Variant, *, bn: str = "custom", dropout_rate: float = 0.25,
                momentum: float = 0.99, name: str | None = None) -> keras.Model:
    """Step 4.2's network with BN and dropout where `variant` puts them."""
    return models.conv_network(
        models.CONV_4_2, DENSE_UNITS, bn=bn if variant.uses_bn else "none",
        dropout_rate=dropout_rate if variant.dropout else 0.0,
        dropout_before_bn=variant.dropout == "before_bn", momentum=momentum,
        name=name or variant.name)


def build_initial_model(variant: Variant, seed: int, config: Config) -> keras.Model:
    """`variant`'s network for `seed`, with the initial weights of its twin without dropout,
    so that every variant of the same shapes starts from the same weights: a Dropout layer
    draws a seed of its own when it is built, which changes the initial weights of the
    layers built after it."""
    options = dict(bn=config.bn, dropout_rate=config.dropout_rate, momentum=config.bn_momentum)
    keras.utils.set_random_seed(seed)
    model = build_model(variant, **options)
    if variant.dropout:
        keras.utils.set_random_seed(seed)
        twin = build_model(dataclasses.replace(variant, dropout=None), **options)
        model.set_weights(twin.get_weights())
    return model


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    subset = prepare_training_subset(config, arrays)
    seeds = list(range(config.seed, config.seed + config.seeds))
    schedule = compressed_schedule(
        config.epochs * math.ceil(len(subset.x_train) / config.batch_size))
    print(f"dropout experiment: {len(subset.x_train)} training images, "
          f"{plural(config.epochs, 'epoch')}, seeds {seeds}, dropout rate "
          f"{config.dropout_rate}, BN layer: {config.bn} (momentum {config.bn_momentum}), "
          f"Adam {schedule.floor:g} + {schedule.peak:g} e^(-t / {schedule.decay_steps:g})")

    results = {}
    for variant in config.chosen_variants():
        runs = [train_variant(variant, seed, subset, schedule, config) for seed in seeds]
        results[variant.name] = summarize_seeds(variant, runs)
        print(summary_line(results[variant.name]))
    best = max(result["test_accuracy"]["mean"] for result in results.values())
    noise = noise_floor(best, len(subset.y_test))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")

    metrics = {"experiment": "dropout", "train_size": int(len(subset.x_train)),
               "test_size": int(len(subset.y_test)),
               "evaluation_size": subset.evaluation.stop, "seeds": seeds,
               "noise_floor": noise, "variants": results}
    save_results(config.outdir, metrics, _figure(metrics, config), config)
    return metrics


def train_variant(variant: Variant, seed: int, subset: TrainingSubset,
                  schedule: DecayToFloor, config: Config) -> dict:
    """One seed's run of `variant`: its final numbers (FINAL_NUMBERS) on the whole training
    subset and test set, and the accuracy on the sampled test images after each epoch."""
    model = build_initial_model(variant, seed, config)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history, seconds, train, test = subset.fit_and_evaluate(model, config, seed,
                                                            EVALUATION_BATCH_SIZE)
    train_loss, train_accuracy = train["loss"], train["accuracy"]
    test_loss, test_accuracy = test["loss"], test["accuracy"]
    return {"test_accuracy": test_accuracy, "train_accuracy": train_accuracy,
            "accuracy_gap": train_accuracy - test_accuracy, "test_loss": test_loss,
            "train_loss": train_loss, "loss_gap": test_loss - train_loss,
            "sampled_test_accuracy_per_epoch": [float(accuracy) for accuracy in
                                                history.history["val_accuracy"]],
            "training_seconds": seconds}


def summarize_seeds(variant: Variant, runs: list[dict]) -> dict:
    """`variant`'s runs, one per seed: each final number as a `spread`, the curves per seed."""
    return {"label": variant.label,
            **{key: spread(run[key] for run in runs) for key in FINAL_NUMBERS},
            "sampled_test_accuracy_per_epoch": [run["sampled_test_accuracy_per_epoch"]
                                                for run in runs],
            "training_seconds": round(sum(run["training_seconds"] for run in runs), 1)}


def summary_line(result: dict) -> str:
    """A variant's test accuracy (mean ± sd, then every seed's) and its two gaps."""
    accuracy, gap, loss_gap = (result[key] for key in ("test_accuracy", "accuracy_gap",
                                                       "loss_gap"))
    return (f"{result['label']:>20}: test accuracy {percent_spread(accuracy)} (seeds: "
            f"{', '.join(f'{100 * value:.2f}' for value in accuracy['values'])}); gap "
            f"{100 * gap['mean']:+.2f} ± {100 * gap['sd']:.2f} points, loss gap "
            f"{loss_gap['mean']:+.3f} ± {loss_gap['sd']:.3f}; "
            f"{result['training_seconds']:.0f} s")


def compressed_schedule(total_steps: int) -> DecayToFloor:
    """Step 3.x's decay, squeezed so that `total_steps` span as many time constants as the
    codelab's 10,000 iterations span of the original."""
    original = steps.load("3.1").LEARNING_RATE
    time_constants = CODELAB_ITERATIONS / original.decay_steps
    return DecayToFloor(original.peak, original.floor, total_steps / time_constants)


def _as_hundredths(summary: dict) -> dict:
    """`summary` divided by 100: `plot_seeds` draws fractions in percent, and a
    cross-entropy is drawn as it is."""
    return {"mean": summary["mean"] / 100, "sd": summary["sd"] / 100,
            "values": [value / 100 for value in summary["values"]]}


def _figure(metrics: dict, config: Config):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    results, seeds = metrics["variants"], metrics["seeds"]
    variants = [variant for variant in VARIANTS if variant.name in results]
    labels = [textwrap.fill(variant.label, 12) for variant in variants]
    colors = [variant.color for variant in variants]
    all_test_images = f"all {metrics['test_size']:,} test images"
    figure = Figure(figsize=(12, 9), layout="constrained")
    (curves, accuracy, accuracy_gap, loss_gap) = figure.subplots(2, 2).flat

    epochs = np.arange(1, config.epochs + 1)
    for variant in variants:
        plot_mean_and_spread(curves, epochs, 100 * np.array(
            results[variant.name]["sampled_test_accuracy_per_epoch"]), variant.label,
            variant.color, marker="o", markersize=3)
    curves.set_ylim(top=min(curves.get_ylim()[1], 100))
    curves.set(title=f"(a) test accuracy after each epoch, mean ± sd (band)\n"
                     f"first {metrics['evaluation_size']:,} of the {metrics['test_size']:,} "
                     f"test images", xlabel="epoch", ylabel="test accuracy (%)")
    curves.legend(loc="best", fontsize=8)
    curves.grid(alpha=0.3)
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))

    plot_seeds(accuracy, labels, [results[v.name]["test_accuracy"] for v in variants],
               metrics["noise_floor"], colors=colors)
    accuracy.set(title=f"(b) test accuracy after training\n{all_test_images}",
                 ylabel="test accuracy (%)")
    plot_seeds(accuracy_gap, labels, [results[v.name]["accuracy_gap"] for v in variants],
               colors=colors)
    accuracy_gap.set(title=f"(c) accuracy gap: training (inference mode) minus test\n"
                           f"{metrics['train_size']:,} training images, {all_test_images}",
                     ylabel="train − test accuracy (points)")
    plot_seeds(loss_gap, labels, [_as_hundredths(results[v.name]["loss_gap"])
                                  for v in variants], colors=colors)
    loss_gap.set(title=f"(d) loss gap: test minus training cross-entropy\n"
                       f"{metrics['train_size']:,} training images, {all_test_images}",
                 ylabel="test − train cross-entropy (nats)")

    seed_text = f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"
    figure.suptitle(f"Dropout vs batch norm, step 4.2 conv net: {metrics['train_size']:,} "
                    f"training images, {plural(config.epochs, 'epoch')}, dropout rate "
                    f"{config.dropout_rate:g}, BN momentum {config.bn_momentum:g}\n"
                    f"{seed_text}: every seed (dots), mean ± sd (bars)", fontsize=11)
    return figure

"""Dropout vs batch norm: does BN regularize enough that dropout can go?

The claim (Ioffe & Szegedy 2015, section 4.2.1): BN adds noise of its own (each example
is normalized with its batch's statistics), so a BN network needs less dropout, or none.
A related warning (Li et al. 2019, "variance shift"): dropout placed *before* BN changes
the variance BN learns during training, and that variance is wrong at test time, when
dropout is off.

The experiment trains the step 4.2 convolutional network (6x6x24, 5x5x48 /2, 4x4x64 /2,
dense 200, ReLU) five ways, everything else equal (the same initial weights where the
shapes agree, the same data order, Adam with the step 3.x schedule
0.0001 + 0.003 e^(-t/T) compressed to the run: the codelab's 10,000 steps span 5 time
constants T = 2,000, so T is a fifth of the run's steps here too, and every run ends on
the floor rate, however short):

    neither            no BN, no dropout
    dropout            no BN, dropout after the dense layer's ReLU (step 3.1)
    bn                 BN after every convolution and the dense layer, no dropout
    dropout_before_bn  dense -> dropout -> BN -> ReLU
    dropout_after_bn   dense -> BN -> ReLU -> dropout (step 4.2)

and reports the test accuracy and the train/test gap, in accuracy and in loss, with the
training accuracy measured in inference mode (dropout off, BN on moving statistics) on
the very examples it trained on. A training subset makes overfitting, and so the gap,
visible in a short run.

The BN layers' moving averages use momentum 0.9 by default, not the codelab's 0.99: a
short run has too few steps for 0.99 (after the 50 steps of a first epoch 0.99^50 = 61% of
the moving statistics is still the initial 0 and 1, after 300 steps 5%), and the test
accuracy of the BN variants, computed with those statistics, then measures the moving
averages' lag rather than BN (experiment moving_averages is about that; with 0.99 the
default run's "BN only" net tests at 96.4% instead of 98.1%, and at 82-95% after each
epoch, while its training-mode accuracy is 90-100%).

Default (a few minutes on 2 CPU cores): 5,000 training images, 6 epochs of batch 100.
The full setting, the codelab's 17 epochs on all 60,000 images (about 20 minutes per
variant on 2 CPU cores):

    tfbn experiment dropout --train-size 60000 --epochs 17 --bn-momentum 0.99
"""

from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np

from tfbn import models, steps
from tfbn.config import (
    check_fields, check_fraction, check_positive_integers, check_verbose, option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    batch_size_field, bn_field, bn_momentum_field, dataset_field,
    evaluation_size_field, outdir_field, prepare_training_subset, save_results, seed_field,
    verbose_field)
from tfbn.schedules import DecayToFloor

TITLE = TITLES["dropout"]

DENSE_UNITS = 200
EVALUATION_BATCH_SIZE = 500
CODELAB_ITERATIONS = 10_000


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
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("dropout")
    verbose: int = verbose_field(2, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "train_size", "batch_size", "evaluation_size")
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


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    subset = prepare_training_subset(config, arrays)
    x_train, y_train, y_test = subset.x_train, subset.y_train, subset.y_test
    train_images, test_images, evaluation = (subset.train_images, subset.test_images,
                                             subset.evaluation)
    schedule = compressed_schedule(config.epochs * math.ceil(len(x_train) / config.batch_size))
    print(f"dropout experiment: {len(x_train)} training images, {config.epochs} epochs, "
          f"dropout rate {config.dropout_rate}, BN layer: {config.bn} (momentum "
          f"{config.bn_momentum}), Adam {schedule.floor:g} + {schedule.peak:g} "
          f"e^(-t / {schedule.decay_steps:g})")

    results = {}
    for variant in config.chosen_variants():
        keras.utils.set_random_seed(config.seed)
        train_dataset = subset.train_dataset(config.batch_size, config.seed)
        model = build_model(variant, bn=config.bn, dropout_rate=config.dropout_rate,
                            momentum=config.bn_momentum)
        model.compile(optimizer=keras.optimizers.Adam(schedule),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        started = time.perf_counter()
        history = model.fit(train_dataset, epochs=config.epochs, verbose=config.verbose,
                            shuffle=False,  # the dataset reshuffles itself every epoch
                            validation_data=(test_images[evaluation], y_test[evaluation]),
                            validation_batch_size=EVALUATION_BATCH_SIZE)
        seconds = time.perf_counter() - started
        train_loss, train_accuracy = model.evaluate(
            train_images, y_train, batch_size=EVALUATION_BATCH_SIZE, verbose=0)
        test_loss, test_accuracy = model.evaluate(
            test_images, y_test, batch_size=EVALUATION_BATCH_SIZE, verbose=0)
        results[variant.name] = {
            "label": variant.label,
            "test_accuracy": float(test_accuracy),
            "train_accuracy": float(train_accuracy),
            "accuracy_gap": float(train_accuracy - test_accuracy),
            "test_loss": float(test_loss),
            "train_loss": float(train_loss),
            "loss_gap": float(test_loss - train_loss),
            "sampled_test_accuracy_per_epoch": [float(a) for a in
                                                history.history["val_accuracy"]],
            "training_seconds": round(seconds, 1),
        }
        print(f"{variant.label:>22}: test accuracy {test_accuracy:.4f}, train accuracy "
              f"{train_accuracy:.4f}, gap {train_accuracy - test_accuracy:+.4f} "
              f"(loss gap {test_loss - train_loss:+.4f}); {seconds:.0f} s")

    metrics = {"experiment": "dropout", "train_size": int(len(x_train)),
               "evaluation_size": evaluation.stop, "variants": results}
    save_results(config.outdir, metrics,
                 _figure(results, config, len(x_train), evaluation.stop), config)
    return metrics


def compressed_schedule(total_steps: int) -> DecayToFloor:
    """Step 3.x's decay, squeezed so that `total_steps` span as many time constants as the
    codelab's 10,000 iterations span of the original."""
    original = steps.load("3.1").LEARNING_RATE
    time_constants = CODELAB_ITERATIONS / original.decay_steps
    return DecayToFloor(original.peak, original.floor, total_steps / time_constants)


def _figure(results: dict, config: Config, train_size: int, evaluation_size: int):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(16, 4.8), layout="constrained")
    curves, accuracy_gap, loss_gap = figure.subplots(1, 3)
    epochs = np.arange(1, config.epochs + 1)
    colors = {variant.name: variant.color for variant in VARIANTS}
    for name, result in results.items():
        curves.plot(epochs, result["sampled_test_accuracy_per_epoch"], marker="o",
                    color=colors[name], label=result["label"])
    curves.set(title=f"(a) test accuracy after each epoch\n"
                     f"(first {evaluation_size} test images)",
               xlabel="epoch", ylabel="test accuracy")
    curves.legend(loc="lower right")
    curves.grid(alpha=0.3)
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))

    legend = [Line2D([], [], marker="^", color="black", linestyle="", label="train"),
              Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="black",
                     linestyle="", label="test (colour: variant)")]
    positions = np.arange(len(results))
    labels = [result["label"] for result in results.values()]
    for axes, key, title, template in (
            (accuracy_gap, "accuracy", "(b) accuracy: train (inference mode) vs test",
             "{:+.2%}"),
            (loss_gap, "loss", "(c) cross-entropy: train vs test", "{:+.3f}")):
        train_values = np.array([r[f"train_{key}"] for r in results.values()])
        test_values = np.array([r[f"test_{key}"] for r in results.values()])
        axes.vlines(positions, np.minimum(train_values, test_values),
                    np.maximum(train_values, test_values), color="lightgray", linewidth=6)
        axes.scatter(positions, train_values, marker="^", color="black", zorder=3)
        axes.scatter(positions, test_values, marker="o", color=[colors[n] for n in results],
                     zorder=3)
        for position, train_value, test_value in zip(positions, train_values, test_values):
            gap = train_value - test_value if key == "accuracy" else test_value - train_value
            axes.annotate(f"gap {template.format(gap)}", (position, max(train_value, test_value)),
                          textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
        axes.set_xticks(positions, labels, rotation=20, ha="right")
        axes.set(title=title, ylabel=key)
        axes.margins(y=0.2)
        axes.legend(handles=legend, loc="best")
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle(f"Dropout vs batch norm, step 4.2 conv net: {train_size} training "
                    f"images, {config.epochs} epochs, dropout rate {config.dropout_rate}, "
                    f"BN momentum {config.bn_momentum}")
    return figure

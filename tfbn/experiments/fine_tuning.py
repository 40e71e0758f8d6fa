"""Fine-tuning a pretrained network that has BN: what `trainable = False` does to BN.

The pitfall users hit most (keras#4762, #6570, #9214, #9522, #9965): the body of a
pretrained network is "frozen" and a new head trained on a few labelled images, and BN
behaves in one of several ways depending on the Keras version and on what was frozen. The
experiment pretrains the step 4.2 conv network (with BN) on digits 0-4, puts a new 5-way
head on its body for digits 5-9 and fine-tunes on a small labelled set of 5-9 (200
images, batches of 20), the body frozen in five ways (`tutorials/experiment_fine_tuning.py`
writes them out):

- `frozen`: Keras 3's `layer.trainable = False` on the whole body, BN included. BN then
  runs in inference mode, even inside `fit`: it normalizes with the pretrained moving
  statistics and neither updates them nor trains its offset `beta`.
- `bn_training`: the convolutions and the dense layer frozen, the BN layers left
  trainable: batch statistics of the batches of 20 in training, moving statistics
  updated, `beta` trained.
- `keras2`: the Keras 2.0 behaviour (keras#4762, #6570): `trainable = False` froze BN's
  `gamma` and `beta`, but BN kept normalizing with batch statistics in training and kept
  updating its moving statistics.
- `keras2_fixed_stats`: the later Keras 2 behaviour (keras#9214, #9522, #9965, 2018): batch
  statistics in training, `gamma` and `beta` frozen, and the moving statistics frozen too,
  so that the head trains on features normalized one way and is evaluated on features
  normalized another (the pretrained statistics of digits 0-4).
- `everything`: nothing frozen, every weight fine-tuned.

Each seed draws its own pretraining images (of 0-4) and its own small labelled set (of
5-9), pretrains once, and fine-tunes every variant from the same pretrained weights, the
same new head's initial kernel and the same batches. The experiment reports, over
`seeds` seeds (mean ± sd, every seed's number): the accuracy on every test digit 5-9 and
the test set's noise floor; the training accuracy `fit` reported in its last epoch
(training mode, on the small set); and how far the body's BN layers moved: the largest
change of a moving mean, in standard deviations of the pretrained statistics, and of
`beta` (both in units of the normalized activation), and whether they changed at all.
The pretrained network's accuracy on the test digits 0-4 is reported too.

Default (about 3 minutes on 2 CPU cores): pretraining on 10,000 images of 0-4 for 2
epochs of batch 100 (Adam at 0.003), fine-tuning on 200 images of 5-9 for 10 epochs of
batch 20 (Adam at 0.001), BN momentum 0.9, 3 seeds. The momentum is 0.9, not Keras's
0.99, because the runs are short: after 200 pretraining steps at 0.99 the moving statistics
would still hold 13% of their initial 0 and 1, and 100 fine-tuning steps would move them
only 63% of the way to the new data's. The full setting:

    tfbn experiment fine_tuning --pretrain-size 30000 --pretrain-epochs 5 --seeds 5
"""

from __future__ import annotations

import dataclasses
import importlib
import time

import keras
import numpy as np

from tfbn import data
from tfbn.config import (check_fields, check_fraction, check_positive,
                         check_positive_integers, check_verbose, option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    batch_size_field, bn_field, bn_momentum_field, dataset_arrays, dataset_field, noise_floor,
    outdir_field, percent_spread, plot_seeds, save_results, seed_field, seeds_field, spread,
    training_subset, verbose_field)
from tfbn.practice import batch_norm_layers

TITLE = TITLES["fine_tuning"]
LESSON = "tfbn.tutorials.experiment_fine_tuning"
PRETRAINING_DIGITS = 0  # digits 0-4
FINE_TUNING_DIGITS = 5  # digits 5-9
# Each variant's name, and its label in the figure.
VARIANTS = {
    "frozen": "frozen\n(Keras 3)",
    "bn_training": "BN\ntraining",
    "keras2": "Keras 2.0's\nfreeze",
    "keras2_fixed_stats": "later Keras\n2's freeze",
    "everything": "nothing\nfrozen",
}
EVALUATION_BATCH_SIZE = 1000


@dataclasses.dataclass
class Config:
    pretrain_size: int = dataclasses.field(
        default=10000, metadata=option("training images of digits 0-4 to pretrain on"))
    pretrain_epochs: int = dataclasses.field(default=2, metadata=option("pretraining epochs"))
    batch_size: int = batch_size_field(100, "pretraining batch size")
    learning_rate: float = dataclasses.field(
        default=0.003, metadata=option("Adam's learning rate for pretraining"))
    fine_tune_size: int = dataclasses.field(
        default=200, metadata=option("labelled training images of digits 5-9 to fine-tune on"))
    fine_tune_epochs: int = dataclasses.field(
        default=10, metadata=option("fine-tuning epochs, the same for every variant"))
    fine_tune_batch_size: int = batch_size_field(20, "fine-tuning batch size")
    fine_tune_learning_rate: float = dataclasses.field(
        default=0.001, metadata=option("Adam's learning rate for fine-tuning"))
    bn: str = bn_field()
    bn_momentum: float = bn_momentum_field()
    variants: str = dataclasses.field(
        default=",".join(VARIANTS),
        metadata=option("comma-separated variants to fine-tune, from: " + ", ".join(VARIANTS)))
    seeds: int = seeds_field(3)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("fine_tuning")
    verbose: int = verbose_field(0, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "pretrain_size", "pretrain_epochs", "batch_size",
                                "fine_tune_size", "fine_tune_epochs", "fine_tune_batch_size",
                                "seeds")
        check_positive(self, "learning_rate", "fine_tune_learning_rate")
        check_fraction(self, "bn_momentum")
        check_verbose(self)
        self.chosen_variants()

    def chosen_variants(self) -> tuple[str, ...]:
        """The variants named in `variants`, in the order of VARIANTS."""
        names = [name.strip() for name in self.variants.split(",") if name.strip()]
        unknown = [name for name in names if name not in VARIANTS]
        if unknown or not names:
            raise ValueError(f"variants must name some of {', '.join(VARIANTS)}; "
                             f"got {self.variants!r}")
        return tuple(name for name in VARIANTS if name in names)


def bn_state(model) -> dict[str, dict[str, np.ndarray]]:
    """A copy of every BN layer's moving statistics, offset and scale (those it has)."""
    return {path: {name: keras.ops.convert_to_numpy(getattr(layer, name)).copy()
                   for name in ("moving_mean", "moving_variance", "beta", "gamma")
                   if getattr(layer, name, None) is not None}
            for path, layer in batch_norm_layers(model)}


def bn_changes(before: dict, after: dict, epsilon: float = 1e-3) -> dict:
    """How far the BN layers moved between two `bn_state`s: the largest change of a moving
    mean in standard deviations of the old statistics, the largest change of beta or gamma,
    and whether anything changed at all (exactly)."""
    mean_shift, offset_change = 0.0, 0.0
    statistics_changed = offset_changed = False
    for path, old in before.items():
        new = after[path]
        shift = np.abs(new["moving_mean"] - old["moving_mean"]) / np.sqrt(
            old["moving_variance"] + epsilon)
        mean_shift = max(mean_shift, float(np.max(shift)))
        statistics_changed |= any(not np.array_equal(new[name], old[name])
                                  for name in ("moving_mean", "moving_variance"))
        for name in ("beta", "gamma"):
            if name in old:
                offset_change = max(offset_change,
                                    float(np.max(np.abs(new[name] - old[name]))))
                offset_changed |= not np.array_equal(new[name], old[name])
    return {"moving_mean_shift": mean_shift, "statistics_changed": statistics_changed,
            "beta_change": offset_change, "beta_changed": offset_changed}


def _subset(arrays, first_digit: int, size: int, seed: int, lesson, what: str):
    """`size` training images of the digits first_digit..first_digit + 4 (labels 0-4), and
    every test image of those digits."""
    (x_train, y_train), (x_test, y_test) = arrays
    images, labels = lesson.select_digits(x_train, y_train, first_digit)
    if size > len(images):
        raise ValueError(f"{what} must be at most the {len(images)} training images of "
                         f"digits {first_digit}-{first_digit + 4}, got {size!r}")
    return (training_subset(images, labels, size, seed),
            lesson.select_digits(x_test, y_test, first_digit))


def _train_dataset(split, test_split, batch_size: int, seed: int):
    """A fresh, seeded, reshuffling pipeline: every variant of a seed sees the same batches."""
    train_dataset, _ = data.mnist_datasets(batch_size, seed=seed, arrays=(split, test_split))
    return train_dataset


def _accuracy(model, test_split) -> float:
    images, labels = test_split
    _, accuracy = model.evaluate(data.normalize_images(images), labels, verbose=0,
                                 batch_size=EVALUATION_BATCH_SIZE)
    return float(accuracy)


def _compile(model, lesson, learning_rate: float) -> None:
    model.compile(optimizer=lesson.make_optimizer(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    lesson = importlib.import_module(LESSON)
    arrays = dataset_arrays(arrays, config.dataset)
    seeds = list(range(config.seed, config.seed + config.seeds))
    chosen = config.chosen_variants()
    print(f"fine_tuning experiment: pretrain on {config.pretrain_size} images of 0-4 for "
          f"{config.pretrain_epochs} epochs, fine-tune on {config.fine_tune_size} images of "
          f"5-9 for {config.fine_tune_epochs} epochs, seeds {seeds}, variants "
          f"{', '.join(chosen)}")
    pretrained_accuracies = []
    results = {name: {"test": [], "fit": [], "changes": [], "seconds": 0.0} for name in chosen}
    test_size = 0
    for seed in seeds:
        old_train, old_test = _subset(arrays, PRETRAINING_DIGITS, config.pretrain_size, seed,
                                      lesson, "pretrain_size")
        new_train, new_test = _subset(arrays, FINE_TUNING_DIGITS, config.fine_tune_size, seed,
                                      lesson, "fine_tune_size")
        test_size = len(new_test[1])
        keras.utils.set_random_seed(seed)
        model = lesson.build_model("everything", bn=config.bn, bn_momentum=config.bn_momentum)
        _compile(model, lesson, config.learning_rate)
        model.fit(_train_dataset(old_train, old_test, config.batch_size, seed),
                  epochs=config.pretrain_epochs, shuffle=False, verbose=config.verbose)
        pretrained_accuracies.append(_accuracy(model, old_test))
        body_weights = model.get_layer("body").get_weights()
        for name in chosen:
            keras.utils.set_random_seed(seed)  # the same new head for every variant
            model = lesson.build_model(name, body_weights, bn=config.bn,
                                       bn_momentum=config.bn_momentum)
            _compile(model, lesson, config.fine_tune_learning_rate)
            before = bn_state(model)
            started = time.perf_counter()
            history = model.fit(
                _train_dataset(new_train, new_test, config.fine_tune_batch_size, seed),
                epochs=config.fine_tune_epochs, shuffle=False, verbose=config.verbose)
            results[name]["seconds"] += time.perf_counter() - started
            results[name]["changes"].append(bn_changes(before, bn_state(model)))
            results[name]["fit"].append(history.history["accuracy"][-1])
            results[name]["test"].append(_accuracy(model, new_test))
    pretrained = spread(pretrained_accuracies)
    print(f"pretrained on 0-4: {percent_spread(pretrained)} on the test digits 0-4")
    variants = []
    for name in chosen:
        result = results[name]
        changes = result["changes"]
        variant = {"name": name, "test_accuracy": spread(result["test"]),
                   "fit_accuracy": spread(result["fit"]),
                   "moving_mean_shift": spread([c["moving_mean_shift"] for c in changes]),
                   "beta_change": spread([c["beta_change"] for c in changes]),
                   "statistics_changed": [c["statistics_changed"] for c in changes],
                   "beta_changed": [c["beta_changed"] for c in changes],
                   "training_seconds": round(result["seconds"], 1)}
        variants.append(variant)
        print(f"{name:<19} test on 5-9 {percent_spread(variant['test_accuracy'])}  "
              f"fit {percent_spread(variant['fit_accuracy'])}  "
              f"moving means moved {variant['moving_mean_shift']['mean']:.3f} sd, "
              f"beta {variant['beta_change']['mean']:.3f}  (seeds: "
              f"{', '.join(f'{100 * a:.2f}' for a in result['test'])})")
    best = max(variant["test_accuracy"]["mean"] for variant in variants)
    noise = noise_floor(best, test_size)
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}% "
          f"({test_size} test digits 5-9)")
    metrics = {"experiment": "fine_tuning", "pretrain_size": config.pretrain_size,
               "fine_tune_size": config.fine_tune_size, "test_size": int(test_size),
               "seeds": seeds, "noise_floor": noise, "pretrained_accuracy": pretrained,
               "variants": variants}
    save_results(config.outdir, metrics, _figure(variants, config, noise, seeds), config)
    return metrics


def _figure(variants: list[dict], config: Config, noise: float, seeds: list[int]):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 4.8))
    test_panel, fit_panel, change_panel = figure.subplots(1, 3)
    labels = [VARIANTS[variant["name"]] for variant in variants]
    plot_seeds(test_panel, labels, [variant["test_accuracy"] for variant in variants], noise)
    test_panel.set_title("(a) after fine-tuning: every test digit 5-9")
    test_panel.set_ylabel("test accuracy (%)")
    plot_seeds(fit_panel, labels, [variant["fit_accuracy"] for variant in variants])
    fit_panel.set_title(f"(b) what fit reported: last epoch, {config.fine_tune_size} images")
    fit_panel.set_ylabel("training accuracy, training mode (%)")
    for index, variant in enumerate(variants):
        for key, marker, color, label in (
                ("moving_mean_shift", "o", "C0", "moving mean (in pretrained sd)"),
                ("beta_change", "x", "C3", "beta")):
            values = variant[key]["values"]
            offset = -0.12 if marker == "o" else 0.12
            change_panel.plot(np.full(len(values), index + offset), values, marker,
                              color=color, markersize=6, linestyle="none",
                              label=label if index == 0 else None)
    change_panel.set_xticks(range(len(labels)), labels, fontsize=8)
    change_panel.set_xlim(-0.6, len(labels) - 0.4)
    change_panel.set_title("(c) how far the body's BN layers moved")
    change_panel.set_ylabel("largest change (sd of the normalized activation)")
    change_panel.grid(axis="y", alpha=0.3)
    change_panel.legend(loc="center left", fontsize=8)
    figure.suptitle(f"Fine-tuning with BN: pretrained on {config.pretrain_size:,} images of "
                    f"0-4, new head fine-tuned on {config.fine_tune_size} images of 5-9 "
                    f"(batch {config.fine_tune_batch_size}), seeds {seeds[0]}-{seeds[-1]} "
                    f"(dots) and mean ± sd (bars)", fontsize=10)
    figure.tight_layout()
    return figure

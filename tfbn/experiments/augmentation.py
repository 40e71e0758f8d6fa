"""With BN, distort the training images less?

The claim (Ioffe & Szegedy 2015, section 4.2.1, "Reduce the photometric distortions"; the
codelab: "with BN, use less image distortion"): a BN network trains faster and sees each
training example fewer times, so it should be shown fewer distorted images. Then
distortion should help a BN network less than the same network without BN.

The experiment trains the step 4.2 convolutional network (6x6x24, 5x5x48 /2, 4x4x64 /2,
dense 200 with dropout 0.25, ReLU; `tutorials/experiment_augmentation.py` writes it out)
with BN and without it (each BN layer replaced by the bias it stands for, as
`models.Bias` does for `--bn none`), each at a few distortion strengths: Keras's
`RandomTranslation` and `RandomRotation` as the model's first layers, which act in
training only. The strengths (maximum shift, maximum rotation, each drawn uniformly per
image):

    none     no distortion layers
    light    ±2 pixels (of 28) in each direction, ±10°
    strong   ±4 pixels, ±20°

Everything else is equal: the same epochs, Adam at one constant learning rate for both
networks (0.003, which the network without BN also trains at), the same initial kernels
and batches for a seed (the distortion layers have their own seeds, so they draw no
random numbers that the kernels' initializers would otherwise get), and the light and
strong distortions draw the same random numbers, scaled. It reports the test accuracy on
all 10,000 (undistorted) test digits per network and strength (mean ± sd over `seeds`
seeds, every seed's number, and the test set's noise floor); the gain of each strength
over no distortion per network, seed by seed (the same kernels and batches, so the
difference is paired); and BN's gain minus the gain without BN: negative if BN reduces how
much distortion helps.

The BN layers' moving averages use momentum 0.9, not Keras's 0.99: the default run has
300 steps, and after them 0.99^300 = 5% of each moving statistic would still be its
initial value (experiment moving_averages is about that).

Default (about 7 minutes on 2 CPU cores): 10,000 training images, 3 epochs of batch 100,
the strengths none and strong, 3 seeds: 2 networks x 2 strengths x 3 seeds = 12 trainings
(`--strengths none,light,strong` adds light: 18 trainings, about 11 minutes; a distorted
training runs about a fifth slower than an undistorted one). The full setting, all 60,000
images for 10 epochs, every strength, 5 seeds (30 trainings of about 10 minutes each, 5 hours
in all on 2 CPU cores; 6,000 steps are enough for Keras's BN momentum):

    tfbn experiment augmentation --train-size 60000 --epochs 10 --seeds 5 \
        --strengths none,light,strong --bn-momentum 0.99
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time

import keras
import numpy as np

from tfbn.config import (check_fields, check_fraction, check_positive,
                         check_positive_integers, check_verbose, option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    batch_size_field, bn_momentum_field, dataset_field, noise_floor, outdir_field,
    percent_spread, plot_seeds, prepare_training_subset, save_results, seed_field,
    seeds_field, spread, verbose_field)

TITLE = TITLES["augmentation"]
LESSON = "tfbn.tutorials.experiment_augmentation"
EVALUATION_BATCH_SIZE = 1000


@dataclasses.dataclass(frozen=True)
class Strength:
    name: str
    shift_pixels: float  # the largest shift, in pixels, up or down and left or right
    rotation_degrees: float  # the largest rotation, either way

    @property
    def label(self) -> str:
        if not (self.shift_pixels or self.rotation_degrees):
            return "none"
        return f"{self.name}\n±{self.shift_pixels:g} px, ±{self.rotation_degrees:g}°"


STRENGTHS = (Strength("none", 0, 0), Strength("light", 2, 10), Strength("strong", 4, 20))
NETWORKS = {"bn": "BN", "no_bn": "no BN"}  # the lesson's build_model(bn=True / False)
COLORS = {"bn": "C0", "no_bn": "C1"}


@dataclasses.dataclass
class Config:
    epochs: int = dataclasses.field(default=3, metadata=option("epochs per network"))
    train_size: int = dataclasses.field(
        default=10000, metadata=option("training images used (60000: all of them)"))
    batch_size: int = batch_size_field(100)
    learning_rate: float = dataclasses.field(
        default=0.003, metadata=option("Adam's learning rate, the same for both networks"))
    bn_momentum: float = bn_momentum_field()
    strengths: str = dataclasses.field(
        default="none,strong",
        metadata=option("comma-separated distortion strengths to train, from: "
                        + ", ".join(strength.name for strength in STRENGTHS)
                        + " (the gains need none)"))
    seeds: int = seeds_field(3)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("augmentation")
    verbose: int = verbose_field(0, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "train_size", "batch_size", "seeds")
        check_positive(self, "learning_rate")
        check_fraction(self, "bn_momentum")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more, got {self.seed!r}")
        check_verbose(self)
        self.chosen_strengths()

    def chosen_strengths(self) -> tuple[Strength, ...]:
        """The strengths named in `strengths`, in the order of STRENGTHS."""
        names = [name.strip() for name in self.strengths.split(",") if name.strip()]
        known = [strength.name for strength in STRENGTHS]
        if not names or any(name not in known for name in names):
            raise ValueError(f"strengths must name some of {', '.join(known)}; "
                             f"got {self.strengths!r}")
        return tuple(strength for strength in STRENGTHS if strength.name in names)


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    lesson = importlib.import_module(LESSON)
    subset = prepare_training_subset(config, arrays)
    strengths = config.chosen_strengths()
    seeds = list(range(config.seed, config.seed + config.seeds))
    print(f"augmentation experiment: {len(subset.x_train)} training images, "
          f"{config.epochs} epochs, Adam {config.learning_rate:g}, BN momentum "
          f"{config.bn_momentum}, seeds {seeds}, strengths "
          f"{', '.join(strength.name for strength in strengths)}")
    variants = []
    for network, network_label in NETWORKS.items():
        for strength in strengths:
            accuracies, training_accuracies, seconds = [], [], 0.0
            for seed in seeds:
                keras.utils.set_random_seed(seed)  # the same kernels for every variant
                model = lesson.build_model(network == "bn", strength.shift_pixels,
                                           strength.rotation_degrees, seed,
                                           bn_momentum=config.bn_momentum)
                model.compile(optimizer=lesson.make_optimizer(config.learning_rate),
                              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
                started = time.perf_counter()
                history = model.fit(subset.train_dataset(config.batch_size, seed),
                                    epochs=config.epochs, verbose=config.verbose,
                                    shuffle=False)  # the dataset reshuffles itself
                seconds += time.perf_counter() - started
                _, accuracy = model.evaluate(subset.test_images, subset.y_test, verbose=0,
                                             batch_size=EVALUATION_BATCH_SIZE)
                accuracies.append(accuracy)
                training_accuracies.append(history.history["accuracy"][-1])
            variant = {"name": f"{network_label}, {strength.name}", "network": network,
                       "strength": strength.name, "shift_pixels": strength.shift_pixels,
                       "rotation_degrees": strength.rotation_degrees,
                       "test_accuracy": spread(accuracies),
                       "last_epoch_training_accuracy": spread(training_accuracies),
                       "training_seconds": round(seconds, 1)}
            variants.append(variant)
            print(f"{variant['name']:<14} {percent_spread(variant['test_accuracy'])}  "
                  f"(seeds: {', '.join(f'{100 * a:.2f}' for a in accuracies)}; on the "
                  f"distorted training batches of the last epoch "
                  f"{percent_spread(variant['last_epoch_training_accuracy'])})")
    best = max(variant["test_accuracy"]["mean"] for variant in variants)
    noise = noise_floor(best, len(subset.y_test))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")
    gains, bn_minus_no_bn = distortion_gains(variants)
    for gain in gains:
        print(f"gain of {gain['strength']} over none, {NETWORKS[gain['network']]}: "
              f"{_points(gain['gain'])}")
    for difference in bn_minus_no_bn:
        print(f"BN's gain minus no BN's, {difference['strength']}: "
              f"{_points(difference['difference'])}")
    metrics = {"experiment": "augmentation", "train_size": int(len(subset.x_train)),
               "test_size": int(len(subset.y_test)), "seeds": seeds, "noise_floor": noise,
               "strengths": [dataclasses.asdict(strength) for strength in strengths],
               "variants": variants, "gains": gains,
               "bn_gain_minus_no_bn_gain": bn_minus_no_bn}
    save_results(config.outdir, metrics,
                 _figure(variants, gains, strengths, config, noise, seeds), config)
    return metrics


def distortion_gains(variants: list[dict]) -> tuple[list[dict], list[dict]]:
    """Each distorted variant's test accuracy minus its network's undistorted one, seed by
    seed (a seed's runs share kernels and batches, so the difference is paired), and per
    strength BN's gain minus the gain without BN. Both empty without the strength none."""
    accuracy = {(variant["network"], variant["strength"]):
                np.array(variant["test_accuracy"]["values"]) for variant in variants}
    gains, differences = [], []
    for network, strength in accuracy:
        if strength != "none" and (network, "none") in accuracy:
            gains.append({"network": network, "strength": strength,
                          "gain": spread(accuracy[network, strength]
                                         - accuracy[network, "none"])})
    per_seed = {(gain["network"], gain["strength"]): np.array(gain["gain"]["values"])
                for gain in gains}
    for network, strength in per_seed:
        if network == "bn" and ("no_bn", strength) in per_seed:
            differences.append({"strength": strength,
                                "difference": spread(per_seed["bn", strength]
                                                     - per_seed["no_bn", strength])})
    return gains, differences


def _points(summary: dict) -> str:
    return (f"{100 * summary['mean']:+.2f} ± {100 * summary['sd']:.2f} points (seeds: "
            f"{', '.join(f'{100 * value:+.2f}' for value in summary['values'])})")


def _figure(variants: list[dict], gains: list[dict], strengths, config: Config,
            noise: float, seeds: list[int]):
    from matplotlib.figure import Figure

    labels = {strength.name: strength.label for strength in strengths}
    figure = Figure(figsize=(13, 4.6))
    accuracy_axes, gain_axes = figure.subplots(1, 2, width_ratios=(3, 2) if gains else None)
    plot_seeds(accuracy_axes,
               [f"{NETWORKS[v['network']]}\n{labels[v['strength']]}" for v in variants],
               [variant["test_accuracy"] for variant in variants], noise,
               colors=[COLORS[variant["network"]] for variant in variants])
    if len(strengths) > 1:
        accuracy_axes.axvline(len(strengths) - 0.5, color="0.6", linewidth=0.8)
    accuracy_axes.set_title("(a) test accuracy (undistorted test digits)")
    accuracy_axes.set_ylabel("test accuracy (%)")
    if gains:
        # Side by side per strength: BN's gain next to the gain without BN.
        order = [strength.name for strength in strengths]
        gains = sorted(gains, key=lambda gain: (order.index(gain["strength"]),
                                                list(NETWORKS).index(gain["network"])))
        plot_seeds(gain_axes,
                   [f"{NETWORKS[g['network']]}\n{labels[g['strength']]}" for g in gains],
                   [gain["gain"] for gain in gains],
                   colors=[COLORS[gain["network"]] for gain in gains])
        # A difference of two accuracies on one test set: at most sqrt(2) x its noise.
        difference_noise = 100 * math.sqrt(2) * noise
        gain_axes.axhspan(-difference_noise, difference_noise, color="0.85", zorder=0,
                          label=f"0 ± √2 × the test set's noise ({difference_noise:.2f} "
                                "points)")
        gain_axes.axhline(0, color="0.4", linewidth=0.8)
        gain_axes.legend(loc="best", fontsize=8)
        gain_axes.set_title("(b) gain over no distortion, seed by seed")
        gain_axes.set_ylabel("test accuracy gain (percentage points)")
    else:
        gain_axes.set_axis_off()
        gain_axes.text(0.5, 0.5, "(b) gains need the strength none and another one",
                       ha="center", va="center", transform=gain_axes.transAxes)
    figure.suptitle(f"Image distortion with and without BN: the step 4.2 conv net, "
                    f"{config.train_size:,} images, {config.epochs} epochs, Adam "
                    f"{config.learning_rate:g}, seeds {seeds[0]}-{seeds[-1]} (dots) and "
                    f"mean ± sd (bars)", fontsize=10)
    figure.tight_layout()
    return figure

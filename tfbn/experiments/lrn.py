"""Local response normalization (AlexNet's) vs batch norm vs both vs neither.

The claim (Ioffe & Szegedy 2015, section 4.2.1, and the codelab's seed material): with
BN, AlexNet's local response normalization (LRN, Krizhevsky et al. 2012, section 3.3) is
unnecessary. The experiment trains step 4.2's convolutional network
(`tutorials/experiment_lrn.py` writes it out) four ways:

    plain   no normalization: the convolutions and the dense layer keep their biases
    lrn     LRN only, after the ReLU of the first two convolutions (AlexNet's place)
    bn      BN only (step 4.2): BN(scale=False) between each weighted sum and its ReLU
    lrn_bn  both

LRN has AlexNet's constants, k = 2, n = 5, alpha = 1e-4, beta = 0.75, which are
TensorFlow's depth_radius = 2, bias = 2.0, alpha = 1e-4, beta = 0.75. For a seed, all
four start from the same kernels and see the same batches; the seed loop is the outer one,
so a seed's four networks train one after the other. The experiment reports, over `seeds`
seeds (mean ± sd, every seed's number):

- the test accuracy on all 10,000 test digits, with the test set's own noise floor;
- the time of an epoch: `fit`'s wall seconds over its epochs (the first epoch's graph
  tracing, 2-3 s, included), and the process's CPU seconds likewise. On a shared machine
  these times are indicative only: other jobs' load can change the wall time by more than
  LRN costs (the CPU time is less sensitive to it, not immune);
- how far LRN's divisor (k + alpha S)^beta is from its constant part k^beta in the trained
  networks, on the first test digits, where the ReLU output is positive (its mean and 99th
  percentile; metrics.json has fractions, 0.01 for a divisor 1% above k^beta, the printout
  and the figure percent). A small number means that LRN acts as a constant factor,
  2^-0.75 = 0.59, and normalizes nothing.

Adam at a constant 0.003, the same for all four: step 3.1's peak rate, at which the net
without BN trains well (BN allows more; a rate tuned for one variant would favour it) and
constant, so that a short run is not mostly a decay. Dropout 0.25 after the dense ReLU in
all four, as in step 4.2.

The BN layers' moving averages use momentum 0.9 by default, not the codelab's 0.99: the
default run has 200 steps, after which 0.99^200 = 13% of the moving statistics would still
be their initial 0 and 1, and the BN variants' test accuracy would measure that lag
(experiment dropout's docstring has the numbers).

Default (about 5 minutes on 2 CPU cores: 12 trainings of 200 steps): 10,000 training
images, 2 epochs of batch 100, 3 seeds. The full setting (20 trainings of about 10
minutes each at 1,000 images/s, about 3.5 hours on 2 CPU cores):

    tfbn experiment lrn --train-size 60000 --epochs 10 --seeds 5 --bn-momentum 0.99
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
    batch_size_field, bn_momentum_field, dataset_field, noise_floor, outdir_field,
    percent_spread, plot_seeds, prepare_training_subset, save_results, seed_field,
    seeds_field, spread, verbose_field)

TITLE = TITLES["lrn"]
LESSON = "tfbn.tutorials.experiment_lrn"
EVALUATION_BATCH_SIZE = 1000
DIVISOR_IMAGES = 500  # test digits on which LRN's divisor is measured


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    label: str
    lrn: bool
    bn: bool
    color: str


VARIANTS = (
    Variant("plain", "plain", False, False, "tab:gray"),
    Variant("lrn", "LRN only", True, False, "tab:orange"),
    Variant("bn", "BN only", False, True, "tab:blue"),
    Variant("lrn_bn", "LRN + BN", True, True, "tab:green"),
)


def variant_name(lrn: bool, bn: bool) -> str:
    return next(variant.name for variant in VARIANTS if (variant.lrn, variant.bn) == (lrn, bn))


@dataclasses.dataclass
class Config:
    epochs: int = dataclasses.field(default=2, metadata=option("epochs per network"))
    train_size: int = dataclasses.field(
        default=10000, metadata=option("training images used (60000: all of them)"))
    batch_size: int = batch_size_field(100)
    learning_rate: float = dataclasses.field(
        default=0.003, metadata=option("Adam's constant learning rate, the same for every "
                                       "network"))
    bn_momentum: float = bn_momentum_field()
    variants: str = dataclasses.field(
        default=",".join(variant.name for variant in VARIANTS),
        metadata=option("comma-separated variants to train, from: "
                        + ", ".join(variant.name for variant in VARIANTS)))
    seeds: int = seeds_field(3)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("lrn")
    verbose: int = verbose_field(0, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "train_size", "batch_size", "seeds")
        check_positive(self, "learning_rate")
        check_fraction(self, "bn_momentum")
        check_verbose(self)
        self.chosen_variants()

    def chosen_variants(self) -> tuple[Variant, ...]:
        """The variants named in `variants`, in the order of VARIANTS."""
        names = [name.strip() for name in self.variants.split(",") if name.strip()]
        known = [variant.name for variant in VARIANTS]
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise ValueError(f"variants must name some of {', '.join(known)}; "
                             f"got {self.variants!r}")
        return tuple(variant for variant in VARIANTS if variant.name in names)


def lrn_divisor(inputs: np.ndarray, layer) -> np.ndarray:
    """AlexNet's divisor (k + alpha S)^beta for each element of `inputs` (channels last), in
    float64, with `layer`'s constants: S sums the squares over the 2 depth_radius + 1
    channels around each one (those that exist)."""
    radius = layer.depth_radius
    squares = np.square(inputs.astype(np.float64))
    padded = np.pad(squares, [(0, 0)] * (inputs.ndim - 1) + [(radius, radius)])
    channels = inputs.shape[-1]
    sums = sum(padded[..., offset:offset + channels] for offset in range(2 * radius + 1))
    return (layer.bias + layer.alpha * sums) ** layer.beta


def lrn_divisor_excess(model: keras.Model, images: np.ndarray) -> dict[str, dict]:
    """For each LRN layer of `model`: how far its divisor is above its constant part
    k^beta (divisor / k^beta - 1), on `images`, where the layer's input (a ReLU output) is
    positive (elsewhere its output is 0 whatever the divisor), as {"mean", "p99"}."""
    lrn_type = importlib.import_module(LESSON).LocalResponseNormalization
    lrn_layers = [layer for layer in model.layers if isinstance(layer, lrn_type)]
    if not lrn_layers:
        return {}
    probe = keras.Model(model.inputs, [layer.input for layer in lrn_layers])
    inputs = probe.predict(images, batch_size=EVALUATION_BATCH_SIZE, verbose=0)
    excess = {}
    for layer, layer_inputs in zip(lrn_layers, inputs):
        relative = lrn_divisor(layer_inputs, layer) / layer.bias ** layer.beta - 1
        relative = relative[layer_inputs > 0]
        excess[layer.name] = {"mean": float(np.mean(relative)),
                              "p99": float(np.percentile(relative, 99))}
    return excess


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    lesson = importlib.import_module(LESSON)
    subset = prepare_training_subset(config, arrays)
    chosen = config.chosen_variants()
    seeds = list(range(config.seed, config.seed + config.seeds))
    print(f"lrn experiment: {len(subset.x_train)} training images, {config.epochs} epochs, "
          f"seeds {seeds}, variants {', '.join(variant.name for variant in chosen)}, Adam "
          f"{config.learning_rate:g}, BN momentum {config.bn_momentum}")
    records = {variant.name: [] for variant in chosen}
    for seed in seeds:
        for variant in chosen:
            record = _train_and_measure(lesson, variant, seed, subset, config)
            records[variant.name].append(record)
            print(f"seed {seed}, {variant.label:<9} test accuracy "
                  f"{100 * record['accuracy']:.2f}%, {record['seconds']:.1f} s per epoch")

    variants = []
    for variant in chosen:
        per_seed = records[variant.name]
        excess = {layer: {statistic: spread([record["excess"][layer][statistic]
                                             for record in per_seed])
                          for statistic in ("mean", "p99")}
                  for layer in per_seed[0]["excess"]}
        variants.append({
            "name": variant.name, "label": variant.label, "lrn": variant.lrn,
            "bn": variant.bn, "trainable_parameters": per_seed[0]["trainable_parameters"],
            "test_accuracy": spread([record["accuracy"] for record in per_seed]),
            "seconds_per_epoch": spread([record["seconds"] for record in per_seed]),
            "cpu_seconds_per_epoch": spread([record["cpu_seconds"] for record in per_seed]),
            "lrn_divisor_excess": excess})
    print("test accuracy and seconds per epoch (mean ± sd over the seeds):")
    for variant in variants:
        accuracy = variant["test_accuracy"]
        seconds, cpu_seconds = variant["seconds_per_epoch"], variant["cpu_seconds_per_epoch"]
        print(f"{variant['label']:<9} {percent_spread(accuracy)}  (seeds: "
              f"{', '.join(f'{100 * value:.2f}' for value in accuracy['values'])})  "
              f"{seconds['mean']:.1f} ± {seconds['sd']:.1f} s wall, "
              f"{cpu_seconds['mean']:.1f} ± {cpu_seconds['sd']:.1f} s CPU")
        for layer, statistics in variant["lrn_divisor_excess"].items():
            print(f"          {layer}: LRN's divisor above k^beta by "
                  f"{100 * statistics['mean']['mean']:.2g}% on average, "
                  f"{100 * statistics['p99']['mean']:.2g}% at the 99th percentile")
    best = max(variant["test_accuracy"]["mean"] for variant in variants)
    noise = noise_floor(best, len(subset.y_test))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")
    divisor_images = int(min(DIVISOR_IMAGES, len(subset.y_test)))
    metrics = {"experiment": "lrn", "train_size": int(len(subset.x_train)),
               "test_size": int(len(subset.y_test)), "divisor_images": divisor_images,
               "seeds": seeds, "noise_floor": noise, "variants": variants}
    save_results(config.outdir, metrics, _figure(metrics, config), config)
    return metrics


def _train_and_measure(lesson, variant: Variant, seed: int, subset, config: Config) -> dict:
    """One network trained with `fit` from `seed`'s kernels on `seed`'s batches: its test
    accuracy, wall and CPU seconds per epoch, LRN's divisor and its trainable weights."""
    keras.utils.set_random_seed(seed)  # the same kernels for every variant
    model = lesson.build_model(variant.lrn, variant.bn, config.bn_momentum)
    model.compile(optimizer=lesson.make_optimizer(config.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started, started_cpu = time.perf_counter(), time.process_time()
    model.fit(subset.train_dataset(config.batch_size, seed), epochs=config.epochs,
              shuffle=False,  # the dataset reshuffles itself every epoch
              verbose=config.verbose)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    _, accuracy = model.evaluate(subset.test_images, subset.y_test, verbose=0,
                                 batch_size=EVALUATION_BATCH_SIZE)
    return {"accuracy": float(accuracy), "seconds": seconds / config.epochs,
            "cpu_seconds": cpu_seconds / config.epochs,
            "excess": lrn_divisor_excess(model, subset.test_images[:DIVISOR_IMAGES]),
            "trainable_parameters": sum(int(np.prod(weight.shape))
                                        for weight in model.trainable_weights)}


def _figure(metrics: dict, config: Config):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    variants, seeds = metrics["variants"], metrics["seeds"]

    figure = Figure(figsize=(15, 4.6))
    accuracy_axes, time_axes, divisor_axes = figure.subplots(1, 3)
    labels = [variant["label"] for variant in variants]
    colors = [next(v.color for v in VARIANTS if v.name == variant["name"])
              for variant in variants]
    plot_seeds(accuracy_axes, labels, [variant["test_accuracy"] for variant in variants],
               metrics["noise_floor"], colors=colors)
    accuracy_axes.set(title=f"(a) test accuracy ({metrics['test_size']:,} test digits)",
                      ylabel="test accuracy (%)")

    for index, (variant, color) in enumerate(zip(variants, colors)):
        seconds = variant["seconds_per_epoch"]
        time_axes.plot(np.full(len(seconds["values"]), index), seconds["values"], "o",
                       color=color, alpha=0.5, markersize=4)
        time_axes.errorbar(index, seconds["mean"], yerr=seconds["sd"], fmt="_", color=color,
                           markersize=18, capsize=6, linewidth=2)
    time_axes.set_xticks(range(len(labels)), labels, fontsize=8)
    time_axes.set_xlim(-0.6, len(labels) - 0.4)
    time_axes.set_ylim(bottom=0)
    time_axes.grid(axis="y", alpha=0.3)
    time_axes.set(title="(b) training time per epoch (wall, shared machine: indicative)",
                  ylabel="seconds per epoch")

    markers = {"mean": "o", "p99": "^"}
    tick_labels = []
    for variant, color in zip(variants, colors):
        for layer, statistics in variant["lrn_divisor_excess"].items():
            for statistic, marker in markers.items():
                values = 100 * np.array(statistics[statistic]["values"])
                divisor_axes.plot(np.full(len(values), len(tick_labels)), values, marker,
                                  color=color, alpha=0.6, markersize=5)
            tick_labels.append(f"{variant['label']}\n{layer.removesuffix('_lrn')}")
    if tick_labels:
        divisor_axes.set_xticks(range(len(tick_labels)), tick_labels, fontsize=8)
        divisor_axes.set_xlim(-0.6, len(tick_labels) - 0.4)
        divisor_axes.set_yscale("log")
        legend = [Line2D([], [], marker=markers["mean"], color="0.3", linestyle="",
                         label="mean"),
                  Line2D([], [], marker=markers["p99"], color="0.3", linestyle="",
                         label="99th percentile")]
        divisor_axes.legend(handles=legend, loc="best", fontsize=8,
                            title="over the positive ReLU outputs", title_fontsize=8)
    else:
        divisor_axes.text(0.5, 0.5, "no LRN variant trained", ha="center",
                          transform=divisor_axes.transAxes)
    divisor_axes.grid(axis="y", alpha=0.3)
    divisor_axes.set(title="(c) LRN's divisor above its constant part $k^\\beta$\n"
                           f"(the first {metrics['divisor_images']:,} test digits)",
                     ylabel=r"$(k + \alpha S)^\beta / k^\beta - 1$ (%)")
    seed_text = (f"seed {seeds[0]}" if len(seeds) == 1
                 else f"seeds {seeds[0]}-{seeds[-1]} (dots) and mean ± sd (bars)")
    epochs = f"{config.epochs} epoch{'s' if config.epochs > 1 else ''}"
    figure.suptitle(f"LRN vs BN on step 4.2's conv net: {metrics['train_size']:,} training "
                    f"images, {epochs}, Adam at {config.learning_rate:g}, {seed_text}",
                    fontsize=10)
    figure.tight_layout()
    return figure

"""The BN paper's MNIST figure (Ioffe & Szegedy 2015, Figure 1), rebuilt over seeds.

The claim: with batch normalization a network trains faster and reaches a higher
accuracy. The paper's explanation is that the distribution of each layer's inputs stays
put while the layers below it learn ("internal covariate shift" is removed); that is its
hypothesis, not something this figure measures. Santurkar et al. (2018, "How does batch
normalization help optimization?") trained BN networks with noise injected after BN that
made the inputs shift more than without BN, and they trained as well; they and Bjorck et
al. (2018) explain BN by a smoother loss landscape and the larger learning rates it allows.
This figure shows the speed-up and the stable input distribution side by side; it cannot
say which causes which.

The paper's network: 784 pixels -> 3 fully connected hidden layers of 100 sigmoid units
-> 10-way softmax, minibatches of 60, 50,000 training steps, with and without BN before
each sigmoid. For each of `seeds` seeds (seed, seed + 1, ...) both networks start from the
same kernels and see the same batches. The paper's figure has three panels, and so does
this one:

    (a) test accuracy over the training steps, with and without BN: the mean over the
        seeds and a band of ± one standard deviation;
    (b), (c) the 15th, 50th and 85th percentiles of the input of one sigmoid of the last
        hidden layer over training, without BN (b) and with it (c), for the first seed,
        with the other seeds' medians in grey (sigmoid 0 of one seed is not the same unit
        as sigmoid 0 of another, so their percentiles are not averaged).

metrics.json holds every seed's curves and, as mean ± sd with every seed's value, the
final test accuracy (all test images), the test accuracy after 250, 500, 1,000, 2,000,
5,000 and 10,000 steps (those that are records), the first record at or above 90% and
95%, and the test set's noise floor (the binomial standard error at the best mean).

The paper does not give its optimizer settings; this uses plain SGD at one learning rate
for both networks, and Keras's default (Glorot uniform) initial weights, where the paper
says "small random Gaussian values". The sigmoid inputs are measured on a fixed sample of
training images, normalized with the sample's own batch statistics (what the sigmoid sees
in training) without letting the measurement touch the moving statistics.

Default: 10,000 steps, a record every 250, 3 seeds (3 min 52 s on 2 CPU cores, measured
2026-12-02). The paper's length, five times as long:

    tfbn experiment paper_figure --steps 50000 --record-every 1000
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tfbn import data, models
from tfbn.config import (
    check_fields, check_divides, check_positive, check_positive_integers, check_verbose,
    option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    batch_size_field, bn_field, call_in_training_mode, dataset_arrays, dataset_field,
    fit_in_records, noise_floor, outdir_field, percent_spread, plot_mean_and_spread, plural,
    RecordEveryEpoch, save_results, seed_field, seeds_field, seeds_text, spread, spread_at_steps,
    verbose_field)

TITLE = TITLES["paper_figure"]

HIDDEN_UNITS = (100, 100, 100)
PERCENTILES = (15, 50, 85)
LAST_HIDDEN_ACTIVATION = f"dense{len(HIDDEN_UNITS)}_sigmoid"
EVALUATION_BATCH_SIZE = 1000
# docs/experiments.md tables the test accuracy at these steps, and the first record at or
# above each of these accuracies.
TABLED_STEPS = (250, 500, 1000, 2000, 5000, 10_000)
ACCURACY_THRESHOLDS = (0.90, 0.95)
NETWORKS = {"without_bn": "without BN", "with_bn": "with BN"}


@dataclasses.dataclass
class Config:
    steps: int = dataclasses.field(
        default=10_000, metadata=option("training steps per network (the paper: 50000)"))
    record_every: int = dataclasses.field(
        default=250, metadata=option("steps between two records of the test accuracy and "
                                     "the percentiles; must divide steps"))
    batch_size: int = batch_size_field(60)
    learning_rate: float = dataclasses.field(
        default=0.1, metadata=option("SGD learning rate, the same for both networks"))
    unit: int = dataclasses.field(
        default=0, metadata=option("which sigmoid of the last hidden layer to follow (0-99)"))
    probe_size: int = dataclasses.field(
        default=1000, metadata=option("training images the sigmoid's input is measured on"))
    bn: str = bn_field()
    seeds: int = seeds_field(3)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("paper_figure")
    verbose: int = verbose_field(0, "record")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "steps", "record_every", "batch_size", "probe_size",
                                "seeds")
        check_divides(self, "record_every", "steps")
        check_positive(self, "learning_rate")
        if not 0 <= self.unit < HIDDEN_UNITS[-1]:
            raise ValueError(f"unit must be in 0..{HIDDEN_UNITS[-1] - 1}, got {self.unit!r}")
        check_verbose(self)


def build_model(bn: str) -> keras.Model:
    """The paper's network: 3 x 100 sigmoid units; with BN, BN sits before each sigmoid."""
    return models.dense_network(HIDDEN_UNITS, activation="sigmoid", bn=bn,
                                name="paper_network" if bn == "none" else "paper_network_bn")


def sigmoid_inputs(model: keras.Model, images, activation_name: str = LAST_HIDDEN_ACTIVATION):
    """The inputs of the sigmoid layer `activation_name`, one row per image, as training
    computes them (BN with the batch statistics of `images`); the model is left unchanged."""
    probe = keras.Model(model.input, model.get_layer(activation_name).input)
    return keras.ops.convert_to_numpy(call_in_training_mode(probe, images))


class SigmoidInputPercentiles(RecordEveryEpoch):
    """Records the percentiles of one sigmoid's input at the start and after every epoch
    (here an epoch is `record_every` steps)."""

    def __init__(self, images, unit: int):
        super().__init__()
        self.images = images
        self.unit = unit
        self.steps: list[int] = []
        self.percentiles: list[list[float]] = []

    def _record(self):
        values = sigmoid_inputs(self.model, self.images)[:, self.unit]
        self.steps.append(int(self.model.optimizer.iterations.numpy()))
        self.percentiles.append(np.percentile(values, PERCENTILES).tolist())



def first_step_at_or_above(steps: list[int], accuracies, threshold: float) -> int | None:
    """The first of `steps` whose accuracy is at least `threshold`; None if there is none."""
    return next((step for step, accuracy in zip(steps, accuracies) if accuracy >= threshold),
                None)


def steps_to_reach(first_steps: list[int | None]) -> dict:
    """Every seed's first step at or above a threshold (None: never), how many seeds
    reached it, and their mean and sd when all did (None otherwise: the seeds that never
    reached it have no step to average)."""
    reached = [step for step in first_steps if step is not None]
    summary = (spread(reached) if len(reached) == len(first_steps)
               else {"mean": None, "sd": None})
    return {**summary, "values": list(first_steps), "reached": len(reached)}


def train_and_record(bn: str, seed: int, config: Config, arrays, probe_images,
                     test_images, test_labels) -> dict:
    """One network trained from `seed`: its test accuracy after every record, the
    percentiles of the sigmoid's input at the start and after every record."""
    keras.utils.set_random_seed(seed)  # with and without BN: the same kernels
    # A new pipeline for every run: iterating a dataset again reshuffles it differently,
    # and both networks of a seed must see the same batches in the same order.
    train_dataset, _ = data.mnist_datasets(config.batch_size, flat=True, seed=seed,
                                           arrays=arrays)
    model = build_model(bn)
    model.compile(optimizer=keras.optimizers.SGD(config.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    recorder = SigmoidInputPercentiles(probe_images, config.unit)
    history, seconds = fit_in_records(
        model, train_dataset, config, callbacks=[recorder],
        validation_data=(test_images, test_labels),
        validation_batch_size=EVALUATION_BATCH_SIZE)
    return {"percentile_steps": recorder.steps,
            "test_accuracy": [float(a) for a in history.history["val_accuracy"]],
            "percentiles": recorder.percentiles, "seconds": seconds}


def summarize_network(label: str, runs: list[dict], config: Config) -> dict:
    """The metrics of one network from its runs, one per seed."""
    percentile_steps = runs[0]["percentile_steps"]
    accuracy_steps = percentile_steps[1:]
    test_accuracy = [run["test_accuracy"] for run in runs]
    percentiles = np.array([run["percentiles"] for run in runs])  # seed, record, percentile
    medians = percentiles[:, :, PERCENTILES.index(50)]
    widths = percentiles[:, :, -1] - percentiles[:, :, 0]
    return {
        "label": label,
        "final_test_accuracy": spread(curve[-1] for curve in test_accuracy),
        "accuracy_steps": accuracy_steps,
        "test_accuracy": test_accuracy,
        "at_steps": {"test_accuracy": spread_at_steps(accuracy_steps, test_accuracy,
                                                      (*TABLED_STEPS, config.steps))},
        "first_step_at_or_above": {
            f"{threshold:g}": steps_to_reach([first_step_at_or_above(accuracy_steps, curve,
                                                                     threshold)
                                              for curve in test_accuracy])
            for threshold in ACCURACY_THRESHOLDS},
        "percentile_steps": percentile_steps,
        **{f"percentile_{p}": percentiles[:, :, i].tolist()
           for i, p in enumerate(PERCENTILES)},
        "median_range": spread(np.ptp(medians, axis=1)),
        "width_15_to_85": {"first": spread(widths[:, 0]), "last": spread(widths[:, -1])},
        "training_seconds": round(sum(run["seconds"] for run in runs), 1),
    }


def _steps_text(summary: dict) -> str:
    """`step 4,250 ± 250 (seeds: 4,000, 4,250, 4,500)`, or how many seeds got there."""
    if summary["reached"] == 0:
        return "no seed"
    per_seed = ", ".join("never" if step is None else f"{step:,}"
                         for step in summary["values"])
    if summary["mean"] is None:
        return (f"reached by {summary['reached']} of {len(summary['values'])} seeds "
                f"(seeds: {per_seed})")
    return f"step {summary['mean']:,.0f} ± {summary['sd']:,.0f} (seeds: {per_seed})"


def _print_network(network: dict) -> None:
    final = network["final_test_accuracy"]
    at_steps = network["at_steps"]["test_accuracy"]
    print(f"{network['label']:>10}: final test accuracy {percent_spread(final)} (seeds: "
          + ", ".join(f"{100 * value:.2f}" for value in final["values"]) + ")")
    print("            test accuracy after "
          + "; ".join(f"{int(step):,} steps {percent_spread(summary)}"
                      for step, summary in at_steps.items()))
    for threshold, summary in network["first_step_at_or_above"].items():
        print(f"            first record at or above {100 * float(threshold):g}%: "
              f"{_steps_text(summary)}")
    median_range, widths = network["median_range"], network["width_15_to_85"]
    print(f"            sigmoid input: median's range over training "
          f"{median_range['mean']:.2f} ± {median_range['sd']:.2f}; 15th-85th percentile "
          f"width {widths['first']['mean']:.2f} -> {widths['last']['mean']:.2f}; "
          f"{network['training_seconds']:.0f} s")


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    arrays = dataset_arrays(arrays, config.dataset)
    (x_train, _), (x_test, y_test) = arrays
    probe_images = data.normalize_images(x_train[:config.probe_size], flat=True)
    test_images = data.normalize_images(x_test, flat=True)
    seeds = list(range(config.seed, config.seed + config.seeds))
    print(f"paper figure: {config.steps} steps of batch {config.batch_size}, SGD "
          f"{config.learning_rate:g}, sigmoid {config.unit} of the last hidden layer, "
          f"seeds {seeds}")

    networks = {}
    for (name, label), bn in zip(NETWORKS.items(), ("none", config.bn)):
        runs = [train_and_record(bn, seed, config, arrays, probe_images, test_images, y_test)
                for seed in seeds]
        networks[name] = summarize_network(label, runs, config)
    for network in networks.values():
        _print_network(network)
    best = max(network["final_test_accuracy"]["mean"] for network in networks.values())
    noise = noise_floor(best, len(y_test))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")

    metrics = {"experiment": "paper_figure", "seeds": seeds, "test_size": int(len(y_test)),
               "noise_floor": noise, "percentiles": list(PERCENTILES), "networks": networks}
    save_results(config.outdir, metrics, _figure(networks, config, seeds), config)
    return metrics


def _figure(networks: dict, config: Config, seeds: list[int]):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(16, 5), layout="constrained")
    accuracy_axes, *percentile_axes = figure.subplots(1, 3)
    for (name, network), color in zip(networks.items(), ("tab:gray", "tab:blue")):
        plot_mean_and_spread(accuracy_axes, network["accuracy_steps"],
                             100 * np.array(network["test_accuracy"]), network["label"],
                             color, linestyle="--" if name == "without_bn" else "-")
    over_seeds = (f"seed {seeds[0]}" if len(seeds) == 1
                  else f"mean ± sd over {plural(len(seeds), 'seed')}")
    accuracy_axes.set(title=f"(a) test accuracy: {over_seeds}",
                      xlabel="training step", ylabel="test accuracy (%)")
    accuracy_axes.set_ylim(top=min(accuracy_axes.get_ylim()[1], 100))
    accuracy_axes.legend(loc="lower right")
    accuracy_axes.grid(alpha=0.3)

    percentile_axes[1].sharey(percentile_axes[0])
    styles = dict(zip(PERCENTILES, (":", "-", "--")))
    for axes, letter, network in zip(percentile_axes, "bc", networks.values()):
        steps = network["percentile_steps"]
        for median in network["percentile_50"][1:]:
            axes.plot(steps, median, color="0.7", linewidth=1)
        for percentile, style in styles.items():
            axes.plot(steps, network[f"percentile_{percentile}"][0], color="black",
                      linestyle=style)
        axes.set(title=f"({letter}) {network['label']}, seed {seeds[0]}: input of sigmoid "
                       f"{config.unit}, last hidden layer",
                 xlabel="training step", ylabel="sigmoid input")
        axes.grid(alpha=0.3)
    handles = [Line2D([], [], color="black", linestyle=style,
                      label=f"{percentile}th percentile, seed {seeds[0]}")
               for percentile, style in styles.items()]
    if len(seeds) > 1:
        handles.append(Line2D([], [], color="0.7", linewidth=1,
                              label=f"median, {seeds_text(seeds[1:])}"))
    figure.legend(handles=handles, loc="outside lower right", ncols=len(handles))
    figure.suptitle(f"Ioffe & Szegedy (2015), Figure 1: 784-100-100-100-10 sigmoid network, "
                    f"batch {config.batch_size}, SGD {config.learning_rate:g}, "
                    f"{config.steps:,} steps, {seeds_text(seeds)}")
    return figure

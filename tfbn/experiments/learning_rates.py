"""Higher learning rates: how far can the learning rate go with batch norm, and without?

The claim (Ioffe & Szegedy 2015, section 3.3; the codelab's step 4.0, which raises the
rate tenfold): BN makes training robust to the scale of the weights, so a much higher
learning rate neither blows the activations up nor pins the sigmoids at 0 or 1, and
training converges faster.

The experiment trains the codelab's five-layer sigmoid network (784 -> 200 -> 100 -> 60
-> 30 -> 10) as step 2.0 builds it (no BN) and as step 4.0 does (BN with scale and
offset before each sigmoid), at each learning rate of a sweep, with a constant rate, the
same optimizer, initial weights and data order, and reports the final test accuracy per
rate. A run whose loss became NaN or infinite is marked as diverged.

Default (about 6 minutes on 2 shared CPU cores): Adam, six rates from 0.001 to 0.3
(300x), 1,200 steps of batch 100 (2 epochs) per run, twelve runs. Plain SGD, whose useful
rates sit a hundred times higher:

    tfbn experiment learning_rates --optimizer sgd --learning-rates 0.03,0.1,0.3,1,3,10

The codelab's length (17 epochs, about eight times as long):

    tfbn experiment learning_rates --steps 10000 --record-every 500
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from tfbn import data, steps
from tfbn.config import (
    check_fields, check_divides, check_positive_integers, check_verbose, option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    batch_size_field, bn_field, dataset_arrays, dataset_field, fit_in_records, optimizer_named,
    outdir_field, save_results, seed_field, verbose_field)

TITLE = TITLES["learning_rates"]

ARCHITECTURES = {"none": "2.0", "bn": "4.0"}
EVALUATION_BATCH_SIZE = 1000
CHANCE_ACCURACY = 0.1


def parse_learning_rates(text: str) -> list[float]:
    """"0.001,0.01,0.1" -> [0.001, 0.01, 0.1]; a ValueError naming the option otherwise."""
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"learning_rates must be comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(rate) and rate > 0 for rate in rates):
        raise ValueError(f"learning_rates must all be positive, got {text!r}")
    if len(set(rates)) != len(rates):
        raise ValueError(f"learning_rates must not repeat a rate, got {text!r}")
    return sorted(rates)


@dataclasses.dataclass
class Config:
    learning_rates: str = dataclasses.field(
        default="0.001,0.003,0.01,0.03,0.1,0.3",
        metadata=option("comma-separated learning rates to train each network at"))
    optimizer: str = dataclasses.field(
        default="adam", metadata=option("optimizer for every run", ("adam", "sgd")))
    steps: int = dataclasses.field(default=1200, metadata=option("training steps per run"))
    record_every: int = dataclasses.field(
        default=100, metadata=option("steps between two points of the loss curves; must "
                                     "divide steps"))
    batch_size: int = batch_size_field(100)
    bn: str = bn_field()
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("learning_rates")
    verbose: int = verbose_field(0, "record")

    def __post_init__(self):
        check_fields(self)
        parse_learning_rates(self.learning_rates)
        check_positive_integers(self, "steps", "record_every", "batch_size")
        check_divides(self, "record_every", "steps")
        check_verbose(self)


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    rates = parse_learning_rates(config.learning_rates)
    arrays = dataset_arrays(arrays, config.dataset)
    (_, _), (x_test, y_test) = arrays
    test_images = data.normalize_images(x_test, flat=True)
    print(f"learning rates: {config.optimizer} at {', '.join(f'{r:g}' for r in rates)}; "
          f"{config.steps} steps of batch {config.batch_size} per run")

    results = {}
    for name, step_name in ARCHITECTURES.items():
        runs = []
        for rate in rates:
            keras.utils.set_random_seed(config.seed)
            # A new pipeline for every run: iterating a dataset again reshuffles it differently,
            # and every run must see the same batches in the same order.
            train_dataset, _ = data.mnist_datasets(config.batch_size, flat=True,
                                                   seed=config.seed, arrays=arrays)
            model = (steps.load(step_name).build_model() if name == "none"
                     else steps.load(step_name).build_model(config.bn))
            model.compile(optimizer=optimizer_named(config.optimizer, rate),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            history, seconds = fit_in_records(model, train_dataset, config)
            test_loss, test_accuracy = model.evaluate(
                test_images, y_test, batch_size=EVALUATION_BATCH_SIZE, verbose=0)
            losses = [float(loss) for loss in history.history["loss"]]
            runs.append({
                "learning_rate": rate,
                "test_accuracy": float(test_accuracy),
                "test_loss": float(test_loss),
                "train_loss": losses,
                "diverged": not all(math.isfinite(loss) for loss in losses),
                "training_seconds": round(seconds, 1),
            })
            print(f"{'without BN' if name == 'none' else 'with BN':>10}, rate {rate:<7g}: "
                  f"test accuracy {test_accuracy:.4f}, last training loss {losses[-1]:.4f}"
                  f"{' (diverged)' if runs[-1]['diverged'] else ''}; {seconds:.0f} s")
        accuracies = [r["test_accuracy"] for r in runs]
        results[name] = {
            "label": "without BN (step 2.0)" if name == "none" else "with BN (step 4.0)",
            "runs": runs,
            "best_learning_rate": runs[int(np.argmax(accuracies))]["learning_rate"],
            "best_test_accuracy": max(accuracies),
        }

    metrics = {"experiment": "learning_rates", "optimizer": config.optimizer,
               "learning_rates": rates, "networks": results}
    save_results(config.outdir, metrics, _figure(results, config), config)
    return metrics


def _figure(results: dict, config: Config):
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    figure = Figure(figsize=(16, 4.8), layout="constrained")
    sweep_axes, *loss_axes = figure.subplots(1, 3)
    styles = {"none": ("tab:gray", "--", "s"), "bn": ("tab:blue", "-", "o")}
    for name, result in results.items():
        color, linestyle, marker = styles[name]
        rates = [r["learning_rate"] for r in result["runs"]]
        accuracies = [r["test_accuracy"] for r in result["runs"]]
        sweep_axes.plot(rates, accuracies, color=color, linestyle=linestyle, marker=marker,
                        label=result["label"])
        for run_result in result["runs"]:
            if run_result["diverged"]:
                sweep_axes.annotate("diverged", (run_result["learning_rate"],
                                                 run_result["test_accuracy"]),
                                    textcoords="offset points", xytext=(0, 8), ha="center",
                                    fontsize=8, color=color)
    sweep_axes.axhline(CHANCE_ACCURACY, color="black", linewidth=0.8, linestyle=":",
                       label="chance (10 classes)")
    sweep_axes.set(title=f"(a) test accuracy after {config.steps} steps",
                   xscale="log", xlabel=f"learning rate ({config.optimizer})",
                   ylabel="test accuracy", ylim=(0, 1.02))
    sweep_axes.legend(loc="best")
    sweep_axes.grid(alpha=0.3, which="both")

    loss_axes[1].sharey(loss_axes[0])
    palette = colormaps["viridis"]
    for axes, (letter, result) in zip(loss_axes, zip("bc", results.values())):
        count = len(result["runs"])
        for index, run_result in enumerate(result["runs"]):
            record_steps = config.record_every * np.arange(1, len(run_result["train_loss"]) + 1)
            axes.plot(record_steps, run_result["train_loss"],
                      color=palette(index / max(count - 1, 1)),
                      label=f"rate {run_result['learning_rate']:g}")
        axes.set(title=f"({letter}) {result['label']}: training loss",
                 xlabel="training step",
                 ylabel=f"mean loss over the last {config.record_every} steps", yscale="log")
        axes.legend(loc="best", fontsize=8)
        axes.grid(alpha=0.3, which="both")
    figure.suptitle(f"Learning-rate sweep, five-layer sigmoid network (784-200-100-60-30-10), "
                    f"{config.optimizer}, constant rate, batch {config.batch_size}")
    return figure

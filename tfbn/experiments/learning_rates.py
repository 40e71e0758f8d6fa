"""Higher learning rates: how far can the learning rate go with batch norm, and without?

The claim (Ioffe & Szegedy 2015, section 3.3; the codelab's step 4.0, which raises the
rate tenfold): BN makes training robust to the scale of the weights, so a much higher
learning rate neither blows the activations up nor pins the sigmoids at 0 or 1, and
training converges faster.

The experiment trains the codelab's five-layer sigmoid network (784 -> 200 -> 100 -> 60
-> 30 -> 10) with the layers of step 2.0 (no BN) and with those of step 4.0 (BN with
scale and offset before each sigmoid, no bias before BN), at each learning rate of a
sweep. Every run uses the same optimizer at a constant rate, not the codelab steps'
optimizers and schedules: the rate is the only thing that changes. For a seed, both
networks at every rate start from the same kernels and see the same batches in the same
order; the sweep runs for `seeds` seeds (seed, seed + 1, ...). It reports, per rate and
network, the test accuracy on the whole test set after the last step as mean ± sd over
the seeds with every seed's value, and the test set's own noise floor (the binomial
standard error at the best mean). A run whose loss became NaN or infinite is marked as
diverged, seed by seed.

Default (6 min 55 s on 2 CPU cores, measured 2026-12-02; SGD's sweep 5 min 10 s): Adam, six rates from 0.001 to 0.3 (300x), 1,200 steps of batch 100 (2 epochs) per
run, 3 seeds, 36 runs. Plain SGD, whose useful rates sit a hundred times higher:

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
    batch_size_field, bn_field, dataset_arrays, dataset_field, fit_in_records, noise_floor,
    optimizer_named, outdir_field, percent_spread, plot_mean_and_spread, plural, save_results,
    seed_field, seeds_field, seeds_text, spread, verbose_field)

TITLE = TITLES["learning_rates"]

# The codelab step whose build_model gives each network; not its optimizer or schedule.
ARCHITECTURES = {"none": "2.0", "bn": "4.0"}
LABELS = {"none": "5-layer sigmoid net, no BN", "bn": "with BN before each sigmoid"}
OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "plain SGD"}
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
    seeds: int = seeds_field(3)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("learning_rates")
    verbose: int = verbose_field(0, "record")

    def __post_init__(self):
        check_fields(self)
        parse_learning_rates(self.learning_rates)
        check_positive_integers(self, "steps", "record_every", "batch_size", "seeds")
        check_divides(self, "record_every", "steps")
        check_verbose(self)


def train_once(name: str, rate: float, seed: int, config: Config, arrays, test_images,
               test_labels) -> dict:
    """Network `name` trained at `rate` from `seed`'s kernels and batches: its test accuracy
    and loss after the last step, its training loss per record, whether it diverged."""
    keras.utils.set_random_seed(seed)
    # A new pipeline for every run: iterating a dataset again reshuffles it differently,
    # and every run of a seed must see the same batches in the same order.
    train_dataset, _ = data.mnist_datasets(config.batch_size, flat=True, seed=seed,
                                           arrays=arrays)
    step = steps.load(ARCHITECTURES[name])
    model = step.build_model() if name == "none" else step.build_model(config.bn)
    model.compile(optimizer=optimizer_named(config.optimizer, rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history, seconds = fit_in_records(model, train_dataset, config)
    test_loss, test_accuracy = model.evaluate(test_images, test_labels,
                                              batch_size=EVALUATION_BATCH_SIZE, verbose=0)
    losses = [float(loss) for loss in history.history["loss"]]
    return {"test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
            "train_loss": losses, "diverged": not all(math.isfinite(loss) for loss in losses),
            "seconds": seconds}


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    rates = parse_learning_rates(config.learning_rates)
    arrays = dataset_arrays(arrays, config.dataset)
    (_, _), (x_test, y_test) = arrays
    test_images = data.normalize_images(x_test, flat=True)
    seeds = list(range(config.seed, config.seed + config.seeds))
    print(f"learning rates: {config.optimizer} at {', '.join(f'{r:g}' for r in rates)}; "
          f"{config.steps} steps of batch {config.batch_size} per run; seeds {seeds}")

    results = {}
    for name in ARCHITECTURES:
        runs = []
        for rate in rates:
            per_seed = [train_once(name, rate, seed, config, arrays, test_images, y_test)
                        for seed in seeds]
            runs.append({
                "learning_rate": rate,
                "test_accuracy": spread([r["test_accuracy"] for r in per_seed]),
                "test_loss": spread([r["test_loss"] for r in per_seed]),
                "final_train_loss": spread([r["train_loss"][-1] for r in per_seed]),
                "train_loss": [r["train_loss"] for r in per_seed],
                "diverged": [r["diverged"] for r in per_seed],
                "training_seconds": round(sum(r["seconds"] for r in per_seed), 1),
            })
            summary = runs[-1]
            diverged_seeds = [seed for seed, r in zip(seeds, per_seed) if r["diverged"]]
            print(f"{'no BN' if name == 'none' else 'with BN':>7}, rate {rate:<7g}: test "
                  f"accuracy {percent_spread(summary['test_accuracy'])} (seeds: "
                  + ", ".join(f"{100 * r['test_accuracy']:.2f}" for r in per_seed)
                  + f"); last training loss {summary['final_train_loss']['mean']:.4f}"
                  f"{f'; diverged at seeds {diverged_seeds}' if diverged_seeds else ''}; "
                  f"{summary['training_seconds']:.0f} s")
        means = [r["test_accuracy"]["mean"] for r in runs]
        results[name] = {
            "label": LABELS[name],
            "runs": runs,
            "best_learning_rate": runs[int(np.argmax(means))]["learning_rate"],
            "best_mean_test_accuracy": max(means),
        }

    best = max(result["best_mean_test_accuracy"] for result in results.values())
    noise = noise_floor(best, len(y_test))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")
    metrics = {"experiment": "learning_rates", "optimizer": config.optimizer,
               "learning_rates": rates, "seeds": seeds, "test_size": int(len(y_test)),
               "noise_floor": noise, "networks": results}
    save_results(config.outdir, metrics, _figure(results, config, rates, seeds), config)
    return metrics


def _figure(results: dict, config: Config, rates: list[float], seeds: list[int]):
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import (LogLocator, NullFormatter, NullLocator,
                                   StrMethodFormatter)

    figure = Figure(figsize=(16, 5.4), layout="constrained")
    sweep_axes, *loss_axes = figure.subplots(1, 3)
    styles = {"none": ("tab:gray", "--", "s"), "bn": ("tab:blue", "-", "o")}
    # On the log axis the two networks' points at a rate sit a little apart, not on top.
    offsets = {"none": 0.93, "bn": 1.075}
    any_diverged = False
    for name, result in results.items():
        color, linestyle, marker = styles[name]
        positions = np.array(rates) * offsets[name]
        means = [100 * r["test_accuracy"]["mean"] for r in result["runs"]]
        sds = [100 * r["test_accuracy"]["sd"] for r in result["runs"]]
        sweep_axes.errorbar(positions, means, yerr=sds, color=color, linestyle=linestyle,
                            marker=marker, capsize=4, label=f"{result['label']}: mean ± sd")
        for position, run_result in zip(positions, result["runs"]):
            values = 100 * np.array(run_result["test_accuracy"]["values"])
            diverged = np.array(run_result["diverged"])
            any_diverged |= bool(diverged.any())
            sweep_axes.plot(np.full(len(values), position)[~diverged], values[~diverged],
                            "o", color=color, alpha=0.35, markersize=4)
            sweep_axes.plot(np.full(len(values), position)[diverged], values[diverged],
                            "x", color=color, markersize=7)
    handles, labels = sweep_axes.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.4", marker="o", alpha=0.35, linestyle="",
                          markersize=4))
    labels.append(f"one dot per seed ({plural(len(seeds), 'seed')})")
    if any_diverged:
        handles.append(Line2D([], [], color="0.4", marker="x", linestyle="", markersize=7))
        labels.append("a seed whose loss became NaN or infinite (diverged)")
    handles.append(sweep_axes.axhline(100 * CHANCE_ACCURACY, color="black", linewidth=0.8,
                                      linestyle=":"))
    labels.append("chance (10 classes)")
    sweep_axes.set_xscale("log")
    sweep_axes.set_xticks(rates, [f"{rate:g}" for rate in rates])
    sweep_axes.xaxis.set_minor_locator(NullLocator())
    sweep_axes.set_xlim(rates[0] / 1.6, rates[-1] * 1.6)
    sweep_axes.set(title=f"(a) test accuracy after {plural(config.steps, 'step')}",
                   xlabel=f"learning rate ({OPTIMIZER_NAMES[config.optimizer]}, constant)",
                   ylabel="test accuracy (%)", ylim=(0, 100))
    sweep_axes.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.13),
                      fontsize=8)
    sweep_axes.grid(alpha=0.3)

    loss_axes[1].sharey(loss_axes[0])
    palette = colormaps["viridis"]
    for axes, (letter, result) in zip(loss_axes, zip("bc", results.values())):
        axes.set_yscale("log")  # before the bands, which depend on it
        count = len(result["runs"])
        for index, run_result in enumerate(result["runs"]):
            records = len(run_result["train_loss"][0])
            record_steps = config.record_every * np.arange(1, records + 1)
            diverged = sum(run_result["diverged"])
            plot_mean_and_spread(
                axes, record_steps, run_result["train_loss"],
                f"rate {run_result['learning_rate']:g}"
                + (f" (diverged: {diverged} of {len(seeds)})" if diverged else ""),
                color=palette(index / max(count - 1, 1)))
        axes.set(title=f"({letter}) {result['label']}: training loss",
                 xlabel="training step",
                 ylabel=f"mean loss over the last {config.record_every} steps", yscale="log")
        # Plain numbers (0.5, 1, 2, 3), not powers of ten: the losses span a decade or two.
        axes.yaxis.set_major_locator(LogLocator(subs=(1, 2, 3, 5)))
        axes.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=3, fontsize=8)
        axes.grid(alpha=0.3, which="both")
    figure.suptitle(
        f"Learning-rate sweep of the 5-layer sigmoid net (784-200-100-60-30-10): "
        f"{OPTIMIZER_NAMES[config.optimizer]} at a constant rate, batch {config.batch_size}, "
        f"{seeds_text(seeds)} (loss curves: mean ± sd over the seeds)")
    return figure

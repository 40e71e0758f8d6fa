"""What every experiment does the same way: its options, data, training loop, output files."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
# A Figure made without pyplot draws with Agg when saved: no backend is chosen at import,
# so `--live` can still open a window.
from matplotlib.figure import Figure

from tfbn import data
from tfbn.config import option
from tfbn.rundir import write_json_atomically
from tfbn.training import versions


# The Config fields most experiments share, so that they mean and read the same everywhere.

def batch_size_field(default: int, help_text: str = "training batch size"):
    return dataclasses.field(default=default, metadata=option(help_text))


def bn_field():
    return dataclasses.field(
        default="custom",
        metadata=option("BN layer: tfbn.BatchNorm (custom) or keras's", ("custom", "keras")))


def bn_momentum_field():
    return dataclasses.field(
        default=0.9, metadata=option("momentum of BN's moving averages (0.9 for short runs: "
                                     "see the module docstring; the codelab's is 0.99)"))


def evaluation_size_field():
    return dataclasses.field(
        default=2000, metadata=option("test images evaluated after each epoch for the "
                                      "curves; the final numbers use the whole test set"))


def dataset_field():
    return dataclasses.field(default="mnist", metadata=option("dataset", data.DATASETS))


def seed_field():
    return dataclasses.field(default=0, metadata=option("random seed"))


def outdir_field(experiment: str):
    return dataclasses.field(default=f"runs/experiments/{experiment}",
                             metadata=option("where figure.png and metrics.json go"))


def verbose_field(default: int, line_per: str):
    """`line_per`: what verbose=2 prints one line for ("epoch", or "record" when an epoch
    is the steps between two records)."""
    return dataclasses.field(
        default=default, metadata=option("Keras verbosity: 0 silent, 1 progress bar, 2 one "
                                         f"line per {line_per}"))


def seeds_field(default: int = 3):
    return dataclasses.field(
        default=default, metadata=option("seeds per variant: seed, seed + 1, ... (mean ± sd "
                                         "over them)"))


def spread(values) -> dict:
    """Every seed's value, their mean and sample standard deviation (0 for one seed)."""
    values = [float(value) for value in values]
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": sd, "values": values}


def noise_floor(accuracy: float, test_size: int) -> float:
    """The test set's own noise: the binomial standard error of an accuracy measured on
    `test_size` examples (0.0007 at 99.5% on 10,000 digits)."""
    return float(np.sqrt(accuracy * (1 - accuracy) / test_size))


def percent_spread(summary: dict) -> str:
    """`98.71 ± 0.05%` from a `spread` of accuracies in [0, 1]."""
    return f"{100 * summary['mean']:.2f} ± {100 * summary['sd']:.2f}%"


def plot_seeds(axes, labels: list[str], summaries: list[dict], noise: float | None = None,
               colors=None) -> None:
    """Every seed's accuracy (dots) and their mean ± sd (a bar) per variant, in percent;
    `noise`, the test set's standard error, as a band of ± that around the best mean."""
    for index, (label, summary) in enumerate(zip(labels, summaries)):
        color = colors[index] if colors else f"C{index}"
        values = 100 * np.array(summary["values"])
        axes.plot(np.full(len(values), index), values, "o", color=color, alpha=0.5,
                  markersize=4)
        axes.errorbar(index, 100 * summary["mean"], yerr=100 * summary["sd"], fmt="_",
                      color=color, markersize=18, capsize=6, linewidth=2)
    if noise is not None:
        best = 100 * max(summary["mean"] for summary in summaries)
        axes.axhspan(best - 100 * noise, best + 100 * noise, color="0.85", zorder=0,
                     label=f"best mean ± the test set's noise ({100 * noise:.2f} points)")
        axes.legend(loc="lower right", fontsize=8)
    axes.set_xticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlim(-0.6, len(labels) - 0.4)
    # Every seed and bar inside the axes, with a margin; mean + sd can pass 100%, an
    # accuracy cannot.
    low = min(100 * min(min(s["values"]), s["mean"] - s["sd"]) for s in summaries)
    high = max(100 * max(max(s["values"]), s["mean"] + s["sd"]) for s in summaries)
    margin = 0.08 * max(high - low, 0.1)
    axes.set_ylim(low - margin, min(high + margin, 100.05))
    axes.grid(axis="y", alpha=0.3)


def spread_at_steps(steps: list[int], per_seed, chosen_steps) -> dict[str, dict]:
    """`{"250": spread, ...}`: a curve measured once per seed (one sequence per seed, one
    value per entry of `steps`) at those of `chosen_steps` that are among `steps`."""
    values = np.asarray(per_seed, dtype=float)
    return {str(step): spread(values[:, steps.index(step)])
            for step in chosen_steps if step in steps}


def seeds_text(seeds: list[int]) -> str:
    """`seed 0`, `seeds 0-2`: consecutive seeds, as every experiment draws them."""
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"


def plural(count: int, noun: str) -> str:
    """`1 epoch`, `3 epochs`."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def dataset_arrays(arrays=None, dataset: str = "mnist"):
    """`arrays` when given (tests pass tiny ones), else the real dataset."""
    return arrays if arrays is not None else data.load_mnist(dataset)


def training_subset(images: np.ndarray, labels: np.ndarray, size: int, seed: int):
    """`size` examples drawn without replacement (all of them, in order, when size is all)."""
    if size > len(images):
        raise ValueError(f"train_size must be at most the {len(images)} training images, "
                         f"got {size!r}")
    if size == len(images):
        return images, labels
    chosen = np.sort(np.random.default_rng(seed).choice(len(images), size, replace=False))
    return images[chosen], labels[chosen]


@dataclasses.dataclass(frozen=True)
class TrainingSubset:
    """A training subset, the whole test set, both normalized, and the test images that the
    per-epoch validation samples (`evaluation`)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_images: np.ndarray
    test_images: np.ndarray
    evaluation: slice

    def train_dataset(self, batch_size: int, seed: int):
        """A fresh, equally seeded pipeline: one shared pipeline would show each network the
        next epochs' orders, not the same ones."""
        train_dataset, _ = data.mnist_datasets(
            batch_size, seed=seed,
            arrays=((self.x_train, self.y_train), (self.x_test, self.y_test)))
        return train_dataset

    def fit_and_evaluate(self, model, config, seed: int, evaluation_batch_size: int,
                         callbacks=()):
        """`config.epochs` epochs of `model` on a fresh pipeline for `seed`, validated after
        each epoch on the sampled test images, then evaluated on the whole training subset
        and the whole test set. Returns the history, the seconds of training and the two
        evaluations (`return_dict` metrics)."""
        started = time.perf_counter()
        history = model.fit(self.train_dataset(config.batch_size, seed), epochs=config.epochs,
                            verbose=config.verbose,
                            shuffle=False,  # the dataset reshuffles itself every epoch
                            validation_data=(self.test_images[self.evaluation],
                                             self.y_test[self.evaluation]),
                            validation_batch_size=evaluation_batch_size,
                            callbacks=list(callbacks))
        seconds = time.perf_counter() - started
        train, test = (model.evaluate(images, labels, batch_size=evaluation_batch_size,
                                      verbose=0, return_dict=True)
                       for images, labels in ((self.train_images, self.y_train),
                                              (self.test_images, self.y_test)))
        return history, seconds, train, test


def prepare_training_subset(config, arrays=None) -> TrainingSubset:
    """The dataset (or `arrays`), `config.train_size` training images drawn with
    `config.seed`, and the first `config.evaluation_size` test images for validation (all
    of them when the config has no such field)."""
    (x_train, y_train), (x_test, y_test) = dataset_arrays(arrays, config.dataset)
    x_train, y_train = training_subset(x_train, y_train, config.train_size, config.seed)
    return TrainingSubset(x_train, y_train, x_test, y_test, data.normalize_images(x_train),
                          data.normalize_images(x_test),
                          slice(0, min(getattr(config, "evaluation_size", len(x_test)),
                                       len(x_test))))


def optimizer_named(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Plain SGD for "sgd", Adam for "adam"."""
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate)
    return keras.optimizers.Adam(learning_rate)


class RecordEveryEpoch(keras.callbacks.Callback):
    """Calls `_record()` at the start and after every epoch (in the step-counted experiments
    an epoch is `record_every` steps, see `fit_in_records`)."""

    def on_train_begin(self, logs=None):
        self._record()

    def on_epoch_end(self, epoch, logs=None):
        self._record()

    def _record(self):
        raise NotImplementedError


def fit_in_records(model, train_dataset, config, callbacks=(), validation_data=None,
                   validation_batch_size: int | None = None):
    """Trains `config.steps` steps as epochs of `config.record_every` steps, so that the
    callbacks and the validation see the model once per record. Returns the history and the
    seconds the training took."""
    started = time.perf_counter()
    history = model.fit(train_dataset.repeat(), steps_per_epoch=config.record_every,
                        epochs=config.steps // config.record_every,
                        validation_data=validation_data,
                        validation_batch_size=validation_batch_size,
                        callbacks=list(callbacks), shuffle=False, verbose=config.verbose)
    return history, time.perf_counter() - started


def save_results(outdir: str | Path, metrics: dict, figure: Figure, config) -> Path:
    """Writes `figure.png` and `metrics.json` (with the config and versions) into `outdir`."""
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create outdir {str(outdir)!r}: {error.strerror}") from None
    figure_path = outdir / "figure.png"
    temporary = outdir / "figure.tmp.png"
    figure.savefig(temporary, dpi=110, bbox_inches="tight")
    temporary.replace(figure_path)
    write_json_atomically(outdir / "metrics.json",
                          {**metrics, "config": vars(config), "versions": versions()})
    print(f"figure: {figure_path}\nmetrics: {outdir / 'metrics.json'}")
    return figure_path


def call_in_training_mode(model, inputs):
    """`model(inputs, training=True)`, normalizing with batch statistics, without the side
    effect: BN layers update their moving statistics (and counters) when called in training
    mode, and a measurement must not train the model it measures. Eager only."""
    state = [variable.numpy() for variable in model.non_trainable_variables]
    outputs = model(inputs, training=True)
    for variable, value in zip(model.non_trainable_variables, state):
        variable.assign(value)
    return outputs


def plot_mean_and_spread(axes, x, per_seed, label: str, color: str | None = None,
                         **style) -> None:
    """A curve measured once per seed (`per_seed`: one sequence per seed, each as long as
    `x`): their mean as a line, and mean ± sd as a shaded band (no band for one seed).
    On a log-scaled axis (set it before calling) the band stops at the lowest seed's value
    where mean - sd would be at or below 0, which a log axis cannot show."""
    values = np.asarray(per_seed, dtype=float)
    mean = values.mean(axis=0)
    line, = axes.plot(x, mean, label=label, color=color, **style)
    if len(values) > 1:
        sd = values.std(axis=0, ddof=1)
        low = mean - sd
        if axes.get_yscale() == "log":
            low = np.where(low > 0, low, values.min(axis=0))
        axes.fill_between(x, low, mean + sd, color=line.get_color(), alpha=0.2,
                          linewidth=0)

"""Santurkar et al.'s noisy BN: is it the covariate shift BN removes, or a rough loss?

The claim (Santurkar, Tsipras, Ilyas and Madry 2018, "How does batch normalization help
optimization?", sections 2.1 and 3): BN does not help by keeping each layer's input
distribution still. A BN network with noise added after every BN layer, a mean and a
variance that change at every step, has inputs that shift more than a network without BN,
yet trains about as well as BN. What BN does is make the loss smoother along the gradient.

The experiment trains the codelab's five-layer ReLU network (784 -> 200 -> 100 -> 60 ->
30 -> 10, `tutorials/experiment_noisy_bn.py` writes it and the noise out) three ways:
without BN, with BN before each ReLU, and with BN followed by noise (per unit and step,
`x -> s x + m` with `s ~ U(1 - n/2, 1 + n/2)`, `m ~ U(-n, n)`, in training only; the
paper also draws a different noise for every example, this shifts whole distributions), with
plain SGD, for `seeds` seeds, each from the same initial kernels and the same batches for
a seed. At the start and every `record_every` steps, on a fixed batch of `probe_size`
training images (BN with that batch's statistics, the noisy network with one draw of its
noise), it measures
- the shift of the fourth dense layer's inputs since the last record: the mean over its
  60 inputs of |change of the input's mean over the batch|, divided by the mean of their
  standard deviations over the batch now;
- along the gradient g, at the step sizes `learning_rate` x (1/4, 1/2, 1, 2, 4): the
  range of the loss L(w - eta g), the largest change of the gradient
  ||grad L(w - eta g) - grad L(w)||, and the largest such change per ||eta g|| (the
  "effective beta-smoothness" of their Figure 4);
leaving the weights, BN's moving statistics and the noise's seed state unchanged. It
reports the test accuracy on all 10,000 test digits (noise off; mean ± sd over the seeds,
every seed's number, the test set's noise floor), the training loss (mean over each
record's steps, noise on), and each measure's median over training.

Default (about 4 minutes on 2 shared CPU cores): all 60,000 training images, 1,500 steps of
batch 100 (2.5 epochs), SGD 0.1, noise strength 1, a record every 50 steps, 3 seeds. The
full setting:

    tfbn experiment noisy_bn --steps 10000 --record-every 250 --seeds 5
"""

from __future__ import annotations

import dataclasses
import importlib

import keras
import numpy as np

from tfbn.config import (check_divides, check_fields, check_positive, check_positive_integers,
                         check_verbose, option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    RecordEveryEpoch, batch_size_field, call_in_training_mode, dataset_field, fit_in_records,
    noise_floor, outdir_field, percent_spread, plot_seeds, prepare_training_subset,
    save_results, seed_field, seeds_field, spread, verbose_field)

TITLE = TITLES["noisy_bn"]
LESSON = "tfbn.tutorials.experiment_noisy_bn"
VARIANTS = {"none": "no BN", "bn": "BN", "noisy_bn": "BN + noise"}
COLORS = {"none": "tab:gray", "bn": "tab:blue", "noisy_bn": "tab:orange"}
STEP_SIZE_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
SHIFTED_LAYER = "dense4"  # its inputs: the 60 outputs of the third hidden layer
MEASURES = ("loss_range", "gradient_change", "effective_beta")
EVALUATION_BATCH_SIZE = 1000


@dataclasses.dataclass
class Config:
    steps: int = dataclasses.field(default=1500, metadata=option("training steps per network"))
    record_every: int = dataclasses.field(
        default=50, metadata=option("steps between two measurements; must divide steps"))
    train_size: int = dataclasses.field(
        default=60000, metadata=option("training images used (60000: all of them)"))
    batch_size: int = batch_size_field(100)
    learning_rate: float = dataclasses.field(
        default=0.1, metadata=option("SGD's learning rate, the same for every network; the "
                                     "step sizes probed are 1/4 to 4 times it"))
    noise_strength: float = dataclasses.field(
        default=1.0, metadata=option("n: the noise's scale is U(1 - n/2, 1 + n/2), its shift "
                                     "U(-n, n); in (0, 2)"))
    probe_size: int = dataclasses.field(
        default=500, metadata=option("training images the measures are taken on"))
    seeds: int = seeds_field(3)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("noisy_bn")
    verbose: int = verbose_field(0, "record")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "steps", "record_every", "train_size", "batch_size",
                                "probe_size", "seeds")
        check_divides(self, "record_every", "steps")
        check_positive(self, "learning_rate")
        if not 0 < self.noise_strength < 2:
            raise ValueError("noise_strength must be in (0, 2), so that the noise's scale "
                             f"stays positive, got {self.noise_strength!r}")
        if self.probe_size > self.train_size:
            raise ValueError(f"probe_size must be at most train_size ({self.train_size}), "
                             f"got {self.probe_size!r}")
        check_verbose(self)


def input_statistics(layer_inputs: keras.Model, images) -> tuple[np.ndarray, np.ndarray]:
    """Each input's mean and standard deviation over `images`, computed as in training
    (batch statistics, one draw of the noise), the model left unchanged."""
    values = keras.ops.convert_to_numpy(call_in_training_mode(layer_inputs, images))
    return values.mean(axis=0), values.std(axis=0)


def input_shift(previous_means, means, deviations) -> float:
    """Mean |change of an input's mean| in units of the inputs' mean standard deviation."""
    return float(np.mean(np.abs(means - previous_means)) / (np.mean(deviations) + 1e-12))


class SmoothnessRecorder(RecordEveryEpoch):
    """The lesson's measures along the gradient and the shift of `SHIFTED_LAYER`'s inputs,
    on a fixed batch, at the start and after every record of `record_every` steps."""

    def __init__(self, lesson, images, labels, step_sizes):
        super().__init__()
        self.lesson = lesson
        self.images = images
        self.labels = labels
        self.step_sizes = step_sizes
        self.steps: list[int] = []
        self.measures: list[dict] = []
        self.shifts: list[float] = []
        self._layer_inputs = None
        self._previous_means = None

    def _record(self):
        if self._layer_inputs is None:
            self._layer_inputs = keras.Model(self.model.input,
                                             self.model.get_layer(SHIFTED_LAYER).input)
        self.steps.append(int(self.model.optimizer.iterations.numpy()))
        self.measures.append(self.lesson.along_the_gradient(
            self.model, self.images, self.labels, self.step_sizes))
        means, deviations = input_statistics(self._layer_inputs, self.images)
        if self._previous_means is not None:
            self.shifts.append(input_shift(self._previous_means, means, deviations))
        self._previous_means = means


def accuracy_on(model: keras.Model, images, labels) -> float:
    """The fraction of `images` classified right, in inference mode (noise off), eagerly:
    a `predict` per model would trace a new function every time."""
    batches = (images[start:start + EVALUATION_BATCH_SIZE]
               for start in range(0, len(images), EVALUATION_BATCH_SIZE))
    predictions = [np.argmax(keras.ops.convert_to_numpy(model(batch)), axis=1)
                   for batch in batches]
    return float(np.mean(np.concatenate(predictions) == labels))


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    lesson = importlib.import_module(LESSON)
    subset = prepare_training_subset(config, arrays)
    x_test = subset.test_images.reshape(len(subset.test_images), -1)
    probe_images = subset.train_images[:config.probe_size].reshape(config.probe_size, -1)
    probe_labels = subset.y_train[:config.probe_size].astype(np.int32)
    step_sizes = [config.learning_rate * factor for factor in STEP_SIZE_FACTORS]
    seeds = list(range(config.seed, config.seed + config.seeds))
    print(f"noisy BN experiment: {len(subset.x_train)} training images, {config.steps} steps "
          f"of batch {config.batch_size}, SGD {config.learning_rate:g}, noise strength "
          f"{config.noise_strength:g}, seeds {seeds}")
    variants = []
    for variant, label in VARIANTS.items():
        accuracies, runs, seconds = [], [], 0.0
        for seed in seeds:
            keras.utils.set_random_seed(seed)  # the same kernels for every variant
            model = lesson.build_model(variant, config.noise_strength, seed)
            model.compile(optimizer=lesson.make_optimizer(config.learning_rate),
                          loss="sparse_categorical_crossentropy")
            recorder = SmoothnessRecorder(lesson, probe_images, probe_labels, step_sizes)
            history, run_seconds = fit_in_records(
                model, lesson.flat(subset.train_dataset(config.batch_size, seed)), config,
                callbacks=[recorder])
            seconds += run_seconds
            accuracies.append(accuracy_on(model, x_test, subset.y_test))
            runs.append({"seed": seed, "steps": recorder.steps,
                         "training_loss": [float(loss) for loss in history.history["loss"]],
                         "input_shift": recorder.shifts,
                         **{measure: [record[measure] for record in recorder.measures]
                            for measure in MEASURES}})
        summary = spread(accuracies)
        medians = {measure: spread([np.median(run[measure]) for run in runs])
                   for measure in ("input_shift", *MEASURES)}
        variants.append({"name": variant, "label": label, "test_accuracy": summary,
                         "final_training_loss": spread([run["training_loss"][-1]
                                                        for run in runs]),
                         "medians_over_training": medians, "runs": runs,
                         "training_seconds": round(seconds, 1)})
        print(f"{label:<11} test {percent_spread(summary)} (seeds: "
              f"{', '.join(f'{100 * a:.2f}' for a in accuracies)}); medians over training: "
              + ", ".join(f"{name} {value['mean']:.3g} ± {value['sd']:.2g}"
                          for name, value in medians.items()))
    best = max(variant["test_accuracy"]["mean"] for variant in variants)
    noise = noise_floor(best, len(subset.y_test))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")
    metrics = {"experiment": "noisy_bn", "train_size": int(len(subset.x_train)),
               "test_size": int(len(subset.y_test)), "seeds": seeds,
               "step_sizes": step_sizes, "shifted_layer": SHIFTED_LAYER,
               "noise_floor": noise, "variants": variants}
    figure = _figure(variants, config, noise, seeds, len(subset.y_test))
    save_results(config.outdir, metrics, figure, config)
    return metrics


def _band(axes, steps, curves, color, label):
    """The mean over the seeds as a line, ± their sd as a band."""
    curves = np.array(curves, dtype=float)
    mean = curves.mean(axis=0)
    sd = curves.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
    axes.plot(steps, mean, color=color, label=label)
    axes.fill_between(steps, mean - sd, mean + sd, color=color, alpha=0.25, linewidth=0)


def _figure(variants: list[dict], config: Config, noise: float, seeds: list[int],
            test_size: int):
    from matplotlib import ticker
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 8.5), layout="constrained")
    panels = figure.subplots(2, 3).ravel()
    plot_seeds(panels[0], [variant["label"] for variant in variants],
               [variant["test_accuracy"] for variant in variants], noise,
               colors=[COLORS[variant["name"]] for variant in variants])
    panels[0].set(title=f"(a) test accuracy (noise off), {test_size:,} digits",
                  ylabel="test accuracy (%)")
    curves = (
        (panels[1], "training_loss", "(b) training loss (noise on)",
         f"cross-entropy, mean over {config.record_every} steps"),
        (panels[2], "input_shift", f"(c) shift of {SHIFTED_LAYER}'s inputs since the "
         "last record", "|change of mean| / sd"),
        (panels[3], "loss_range", "(d) loss variation along -g: range of L(w - eta g)",
         "max - min of the loss"),
        (panels[4], "gradient_change", "(e) gradient change: max ||grad(w - eta g) - g||",
         "L2 norm"),
        (panels[5], "effective_beta", "(f) effective beta-smoothness:\n"
         "max ||grad(w - eta g) - g|| / ||eta g||", "gradient change per unit distance"),
    )
    for axes, key, title, ylabel in curves:
        for variant in variants:
            runs = variant["runs"]
            steps = runs[0]["steps"]
            if key in ("training_loss", "input_shift"):
                steps = steps[1:]  # a mean over, or a change since, the previous record
            _band(axes, steps, [run[key] for run in runs], COLORS[variant["name"]],
                  variant["label"])
        axes.set(title=title, xlabel="training step", ylabel=ylabel, yscale="log")
        axes.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        axes.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:g}"))
        axes.yaxis.set_minor_formatter(ticker.NullFormatter())
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=8)
    step_sizes = ", ".join(f"{config.learning_rate * f:g}" for f in STEP_SIZE_FACTORS)
    figure.suptitle(
        f"Noisy BN (Santurkar et al. 2018): the five-layer ReLU net, SGD "
        f"{config.learning_rate:g}, {config.steps} steps of batch {config.batch_size}, noise "
        f"strength {config.noise_strength:g}; seeds {seeds[0]}-{seeds[-1]}: dots and mean ± sd "
        f"(a), mean and ± sd band (b-f)\nmeasures (c-f) on {config.probe_size} fixed training "
        f"images, as in training (batch statistics, one draw of the noise), step sizes eta in "
        f"{{{step_sizes}}}", fontsize=10)
    return figure

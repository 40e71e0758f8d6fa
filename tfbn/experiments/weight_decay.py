"""L2 weight decay with batch norm: the usual strength vs one fifth of it.

The claim (Ioffe & Szegedy 2015, section 4.2.1, "Reduce the L2 weight regularization"):
with BN the weight of the L2 loss can be cut by a factor of 5, and held-out accuracy
improves. Why it can: a kernel followed by BN can be scaled by any factor without changing
the network's output, so L2 no longer limits what the network computes; it only shrinks
the kernels, which raises the effective learning rate of the next steps.

The experiment trains the step 4.2 convolutional network with BN (dropout off, so that L2
is the only explicit regularizer) with SGD, momentum 0.9, the learning rate decayed along
a cosine to 0, and an L2 loss on every kernel (convolutions and dense layers; not on BN's
offsets nor on the logits' bias):

    loss = cross-entropy + weight_decay / 2 * sum of squared kernel weights

so that `weight_decay` is the coefficient of `w` in the gradient, the convention in which
5e-4 is the usual strength (Caffe's and PyTorch's SGD `weight_decay`). It trains the
usual strength, one fifth of it, and (by default) none, for `seeds` seeds (for a seed,
every strength starts from the same initial weights and sees the same data order), and
reports the test accuracy on all 10,000 test digits (mean ± sd over the seeds, every
seed's number, and the test set's own noise floor), the test accuracy after every epoch
(on the first `evaluation_size` test images; `--evaluation-size 10000` measures it on all
of them, for about 20% more time) and the norm of all kernels, which L2 drives down (all
but the logits' kernel feed a BN layer, so their scale does not change the output).

BN's moving averages use momentum 0.9 by default, not the codelab's 0.99, which needs
more steps than a short run has (the dropout experiment's docstring gives the numbers).

Default (10 min 30 s on 2 CPU cores, measured 2026-12-02):
10,000 training images, 5 epochs of batch 100, 5 seeds (the differences are under a
point). The full setting, all 60,000 images for the codelab's 17 epochs (about 20 minutes
per strength and seed on 2 CPU cores):

    tfbn experiment weight_decay --train-size 60000 --epochs 17 --bn-momentum 0.99
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from tfbn import models
from tfbn.config import (
    check_fields, check_fraction, check_positive, check_positive_integers, check_verbose,
    option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    TrainingSubset, batch_size_field, bn_field, bn_momentum_field, dataset_field,
    evaluation_size_field, noise_floor, outdir_field, percent_spread, plot_mean_and_spread,
    plot_seeds, plural, prepare_training_subset, save_results, seed_field, seeds_field, spread,
    verbose_field)

TITLE = TITLES["weight_decay"]

EVALUATION_BATCH_SIZE = 500
MOMENTUM = 0.9
# A run's final numbers, each kept per seed and summarized as a `spread`.
FINAL_NUMBERS = ("test_accuracy", "test_cross_entropy", "train_accuracy",
                 "train_cross_entropy", "l2_term", "kernel_norm")
# A run's curves, each kept per seed.
CURVES = ("kernel_norm_per_epoch", "sampled_test_accuracy_per_epoch")


@dataclasses.dataclass
class Config:
    epochs: int = dataclasses.field(default=5, metadata=option("epochs per strength"))
    train_size: int = dataclasses.field(
        default=10000, metadata=option("training images used (60000: all of them)"))
    batch_size: int = batch_size_field(100)
    weight_decay: float = dataclasses.field(
        default=5e-4, metadata=option("the usual L2 strength: the coefficient of w in the "
                                      "gradient (loss term weight_decay / 2 * |w|^2)"))
    reduction: float = dataclasses.field(
        default=5.0, metadata=option("the reduced strength is weight_decay / reduction"))
    include_zero: bool = dataclasses.field(
        default=True, metadata=option("also train without L2, as the reference"))
    learning_rate: float = dataclasses.field(
        default=0.05, metadata=option("SGD (momentum 0.9) learning rate at the start; "
                                      "it decays along a cosine to 0"))
    dropout_rate: float = dataclasses.field(
        default=0.0, metadata=option("dropout after the dense layer (step 4.2 uses 0.25)"))
    bn: str = bn_field()
    bn_momentum: float = bn_momentum_field()
    evaluation_size: int = evaluation_size_field()
    seeds: int = seeds_field(5)
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("weight_decay")
    verbose: int = verbose_field(2, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "train_size", "batch_size", "evaluation_size",
                                "seeds")
        check_positive(self, "weight_decay")
        if not self.reduction > 1:
            raise ValueError(f"reduction must be greater than 1, got {self.reduction!r}")
        check_positive(self, "learning_rate")
        check_fraction(self, "dropout_rate", "bn_momentum")
        check_verbose(self)

    def strengths(self) -> list[float]:
        """The L2 strengths to train: usual, reduced, and 0 when `include_zero`."""
        strengths = [self.weight_decay, self.weight_decay / self.reduction]
        return strengths + [0.0] if self.include_zero else strengths


def with_kernel_l2(model: keras.Model, weight_decay: float) -> keras.Model:
    """A fresh copy of `model` whose kernels carry the loss weight_decay / 2 * |w|^2.

    Keras's L2(l2) adds l2 * |w|^2, hence the factor 1/2. The copy is initialised anew.
    """
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None

    def clone(layer):
        config = layer.get_config()
        if "kernel_regularizer" in config:
            config["kernel_regularizer"] = regularizer
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def kernel_norm(model: keras.Model) -> float:
    """The Euclidean norm of all kernels of `model` taken together."""
    squares = sum(float(np.sum(np.square(keras.ops.convert_to_numpy(layer.kernel))))
                  for layer in model.layers if hasattr(layer, "kernel"))
    return float(np.sqrt(squares))


class KernelNormHistory(keras.callbacks.Callback):
    """Records `kernel_norm(model)` before training and after every epoch."""

    def __init__(self):
        super().__init__()
        self.norms: list[float] = []

    def on_train_begin(self, logs=None):
        self.norms = [kernel_norm(self.model)]

    def on_epoch_end(self, epoch, logs=None):
        self.norms.append(kernel_norm(self.model))


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    subset = prepare_training_subset(config, arrays)
    seeds = list(range(config.seed, config.seed + config.seeds))
    total_steps = config.epochs * math.ceil(len(subset.x_train) / config.batch_size)
    print(f"weight decay experiment: {len(subset.x_train)} training images, "
          f"{plural(config.epochs, 'epoch')} ({total_steps} steps), seeds {seeds}, strengths "
          f"{config.strengths()}, BN layer: {config.bn}")

    results = []
    for strength in config.strengths():
        runs = [train_strength(strength, seed, subset, total_steps, config) for seed in seeds]
        results.append(summarize_seeds(strength, runs))
        print(summary_line(results[-1], config))
    best = max(result["test_accuracy"]["mean"] for result in results)
    noise = noise_floor(best, len(subset.y_test))
    print(f"the test set's noise floor: ± {100 * noise:.2f} points at {100 * best:.2f}%")

    metrics = {"experiment": "weight_decay", "train_size": int(len(subset.x_train)),
               "test_size": int(len(subset.y_test)),
               "evaluation_size": subset.evaluation.stop, "steps": total_steps,
               "seeds": seeds, "noise_floor": noise, "runs": results}
    save_results(config.outdir, metrics, _figure(metrics, config), config)
    return metrics


def build_initial_model(strength: float, seed: int, config: Config) -> keras.Model:
    """The BN conv net with L2 `strength` on its kernels, initialised from `seed`: the same
    initial weights for every strength."""
    network = models.conv_network(models.CONV_4_2, bn=config.bn,
                                  dropout_rate=config.dropout_rate,
                                  momentum=config.bn_momentum)
    # The copy's weights are the ones trained.
    keras.utils.set_random_seed(seed)
    return with_kernel_l2(network, strength)


def train_strength(strength: float, seed: int, subset: TrainingSubset, total_steps: int,
                   config: Config) -> dict:
    """One seed's run at L2 `strength`: its final numbers (FINAL_NUMBERS) on the whole
    training subset and test set, and its curves (CURVES)."""
    model = build_initial_model(strength, seed, config)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps)
    # Keras's loss includes the L2 term; the cross-entropy alone is tracked apart.
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=MOMENTUM),
                  loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy(
                      name="cross_entropy")])
    norms = KernelNormHistory()
    history, seconds, train, test = subset.fit_and_evaluate(
        model, config, seed, EVALUATION_BATCH_SIZE, callbacks=[norms])
    return {"test_accuracy": test["accuracy"], "test_cross_entropy": test["cross_entropy"],
            "train_accuracy": train["accuracy"],
            "train_cross_entropy": train["cross_entropy"],
            "l2_term": train["loss"] - train["cross_entropy"],
            "kernel_norm": norms.norms[-1], "kernel_norm_per_epoch": norms.norms,
            "sampled_test_accuracy_per_epoch": [float(accuracy) for accuracy in
                                                history.history["val_accuracy"]],
            "training_seconds": seconds}


def summarize_seeds(strength: float, runs: list[dict]) -> dict:
    """The runs at `strength`, one per seed: each final number as a `spread`, each curve
    per seed."""
    return {"weight_decay": strength,
            **{key: spread(run[key] for run in runs) for key in FINAL_NUMBERS},
            **{key: [run[key] for run in runs] for key in CURVES},
            "training_seconds": round(sum(run["training_seconds"] for run in runs), 1)}


def summary_line(result: dict, config: Config) -> str:
    """A strength's test accuracy (mean ± sd, then every seed's) and its kernels' norm."""
    accuracy = result["test_accuracy"]
    initial_norm = np.mean([norms[0] for norms in result["kernel_norm_per_epoch"]])
    final_norm = result["kernel_norm"]
    return (f"{_label(result['weight_decay'], config):>18}: test accuracy "
            f"{percent_spread(accuracy)} (seeds: "
            f"{', '.join(f'{100 * value:.2f}' for value in accuracy['values'])}); kernel norm "
            f"{initial_norm:.1f} -> {final_norm['mean']:.1f} ± {final_norm['sd']:.1f}; "
            f"{result['training_seconds']:.0f} s")


def _label(strength: float, config: Config) -> str:
    if strength == config.weight_decay:
        return f"L2 {strength:g} (usual)"
    if strength == 0:
        return "no L2"
    return f"L2 {strength:g} (1/{config.reduction:g})"


def _figure(metrics: dict, config: Config):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    results, seeds = metrics["runs"], metrics["seeds"]
    colors = ("tab:red", "tab:blue", "tab:gray")[:len(results)]
    labels = [_label(result["weight_decay"], config) for result in results]
    figure = Figure(figsize=(16, 4.8), layout="constrained")
    curves, accuracy, norms = figure.subplots(1, 3)
    for result, label, color in zip(results, labels, colors):
        per_epoch = 100 * np.array(result["sampled_test_accuracy_per_epoch"])
        plot_mean_and_spread(curves, np.arange(1, config.epochs + 1), per_epoch, label, color,
                             marker="o", markersize=3)
        plot_mean_and_spread(norms, np.arange(config.epochs + 1),
                             result["kernel_norm_per_epoch"], label, color, marker="o",
                             markersize=3)
    curves.set_ylim(top=min(curves.get_ylim()[1], 100))
    curves.set(title=f"(a) test accuracy after each epoch, mean ± sd (band)\n"
                     f"first {metrics['evaluation_size']:,} of the {metrics['test_size']:,} "
                     f"test images", xlabel="epoch", ylabel="test accuracy (%)")
    plot_seeds(accuracy, [label.replace(" (", "\n(") for label in labels],
               [result["test_accuracy"] for result in results], metrics["noise_floor"],
               colors=colors)
    accuracy.set(title=f"(b) test accuracy after training\n"
                       f"all {metrics['test_size']:,} test images",
                 ylabel="test accuracy (%)")
    norms.set(title="(c) norm of all kernels taken together\nmean ± sd (band)",
              xlabel="epoch (0: initial weights)",
              ylabel="Euclidean norm of the kernels")
    for axes in (curves, norms):
        axes.legend(loc="best", fontsize=8)
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    dropout = f"dropout {config.dropout_rate:g}" if config.dropout_rate else "no dropout"
    seed_text = f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"
    figure.suptitle(f"L2 weight decay with BN (momentum {config.bn_momentum:g}), step 4.2 conv "
                    f"net, {dropout}: {metrics['train_size']:,} training images, "
                    f"{plural(config.epochs, 'epoch')}, SGD momentum {MOMENTUM}, learning rate "
                    f"{config.learning_rate:g} with cosine decay, L2 on all kernels\n"
                    f"{seed_text}: every seed (dots), mean ± sd (bars and bands)", fontsize=11)
    return figure

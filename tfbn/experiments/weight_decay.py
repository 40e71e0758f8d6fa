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
usual strength, one fifth of it, and (by default) none, from the same initial weights
on the same data order, and reports the test accuracy after every epoch and the norm of
all kernels, which L2 drives down (all but the logits' kernel feed a BN layer, so their
scale does not change the output).

BN's moving averages use momentum 0.9 by default, not the codelab's 0.99, which needs
more steps than a short run has (the dropout experiment's docstring gives the numbers).

Default (a few minutes on 2 CPU cores): 10,000 training images, 5 epochs of batch 100.
The full setting, all 60,000 images for the codelab's 17 epochs (about 20 minutes per
strength on 2 CPU cores):

    tfbn experiment weight_decay --train-size 60000 --epochs 17 --bn-momentum 0.99
"""

from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np

from tfbn import models
from tfbn.config import (
    check_fields, check_fraction, check_positive, check_positive_integers, check_verbose,
    option)
from tfbn.experiments import TITLES
from tfbn.experiments.common import (
    batch_size_field, bn_field, bn_momentum_field, dataset_field,
    evaluation_size_field, outdir_field, prepare_training_subset, save_results, seed_field,
    verbose_field)

TITLE = TITLES["weight_decay"]

EVALUATION_BATCH_SIZE = 500
MOMENTUM = 0.9


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
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("weight_decay")
    verbose: int = verbose_field(2, "epoch")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "train_size", "batch_size", "evaluation_size")
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
    x_train, y_train, y_test = subset.x_train, subset.y_train, subset.y_test
    train_images, test_images, evaluation = (subset.train_images, subset.test_images,
                                             subset.evaluation)
    total_steps = config.epochs * math.ceil(len(x_train) / config.batch_size)
    print(f"weight decay experiment: {len(x_train)} training images, {config.epochs} epochs "
          f"({total_steps} steps), strengths {config.strengths()}, BN layer: {config.bn}")

    results = []
    for strength in config.strengths():
        network = models.conv_network(models.CONV_4_2, bn=config.bn,
                                      dropout_rate=config.dropout_rate,
                                      momentum=config.bn_momentum)
        # The copy's weights are the ones trained: the same for every strength, like the
        # data order below.
        keras.utils.set_random_seed(config.seed)
        model = with_kernel_l2(network, strength)
        train_dataset = subset.train_dataset(config.batch_size, config.seed)
        schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps)
        # Keras's loss includes the L2 term; the cross-entropy alone is tracked apart.
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=MOMENTUM),
                      loss="sparse_categorical_crossentropy",
                      metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy(
                          name="cross_entropy")])
        norms = KernelNormHistory()
        started = time.perf_counter()
        history = model.fit(train_dataset, epochs=config.epochs, verbose=config.verbose,
                            shuffle=False,  # the dataset reshuffles itself every epoch
                            validation_data=(test_images[evaluation], y_test[evaluation]),
                            validation_batch_size=EVALUATION_BATCH_SIZE, callbacks=[norms])
        seconds = time.perf_counter() - started
        train = model.evaluate(train_images, y_train, batch_size=EVALUATION_BATCH_SIZE,
                               verbose=0, return_dict=True)
        test = model.evaluate(test_images, y_test, batch_size=EVALUATION_BATCH_SIZE,
                              verbose=0, return_dict=True)
        results.append({
            "weight_decay": strength,
            "test_accuracy": float(test["accuracy"]),
            "test_cross_entropy": float(test["cross_entropy"]),
            "train_accuracy": float(train["accuracy"]),
            "train_cross_entropy": float(train["cross_entropy"]),
            "l2_term": float(train["loss"] - train["cross_entropy"]),
            "kernel_norm": norms.norms[-1],
            "kernel_norm_per_epoch": norms.norms,
            "sampled_test_accuracy_per_epoch": [float(a) for a in
                                                history.history["val_accuracy"]],
            "training_seconds": round(seconds, 1),
        })
        print(f"weight decay {strength:g}: test accuracy {test['accuracy']:.4f}, train "
              f"accuracy {train['accuracy']:.4f}, kernel norm {norms.norms[0]:.1f} -> "
              f"{norms.norms[-1]:.1f}; {seconds:.0f} s")

    metrics = {"experiment": "weight_decay", "train_size": int(len(x_train)),
               "evaluation_size": evaluation.stop, "steps": total_steps, "runs": results}
    save_results(config.outdir, metrics,
                 _figure(results, config, len(x_train), evaluation.stop), config)
    return metrics


def _label(strength: float, config: Config) -> str:
    if strength == config.weight_decay:
        return f"L2 {strength:g} (usual)"
    if strength == 0:
        return "no L2"
    return f"L2 {strength:g} (1/{config.reduction:g})"


def _figure(results: list[dict], config: Config, train_size: int, evaluation_size: int):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(12, 4.8), layout="constrained")
    accuracy_axes, norm_axes = figure.subplots(1, 2)
    colors = ("tab:red", "tab:blue", "tab:gray")
    for result, color in zip(results, colors):
        label = _label(result["weight_decay"], config)
        accuracy = result["sampled_test_accuracy_per_epoch"]
        accuracy_axes.plot(np.arange(1, len(accuracy) + 1), accuracy, marker="o", color=color,
                           label=f"{label}: final {result['test_accuracy']:.2%}")
        norm_axes.plot(np.arange(len(result["kernel_norm_per_epoch"])),
                       result["kernel_norm_per_epoch"], marker="o", color=color, label=label)
    accuracy_axes.set(title=f"(a) test accuracy after each epoch (first {evaluation_size} "
                            f"test images;\nlegend: final, whole test set)",
                      xlabel="epoch", ylabel="test accuracy")
    norm_axes.set(title="(b) norm of all kernels taken together",
                  xlabel="epoch (0: initial weights)", ylabel="||kernels||")
    for axes in (accuracy_axes, norm_axes):
        axes.legend(loc="best")
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    dropout = f"dropout {config.dropout_rate:g}" if config.dropout_rate else "no dropout"
    figure.suptitle(f"L2 weight decay with BN (momentum {config.bn_momentum:g}), step 4.2 conv "
                    f"net, {dropout}: {train_size} training images, {config.epochs} epochs,\n"
                    f"SGD momentum {MOMENTUM}, learning rate {config.learning_rate:g} with "
                    f"cosine decay, L2 on all kernels")
    return figure

"""The BN paper's MNIST figure (Ioffe & Szegedy 2015, Figure 1), rebuilt.

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
each sigmoid. Its figure has three panels, and so does this one:

    (a) test accuracy over the training steps, with and without BN;
    (b), (c) the 15th, 50th and 85th percentiles of the input of one sigmoid of the last
        hidden layer over training, without BN (b) and with it (c).

The paper does not give its optimizer settings; this uses plain SGD at one learning rate
for both networks, and Keras's default (Glorot uniform) initial weights, where the paper
says "small random Gaussian values". The sigmoid inputs are measured on a fixed sample of
training images, normalized with the sample's own batch statistics (what the sigmoid sees
in training) without letting the measurement touch the moving statistics.

Default (about 3 minutes on 2 shared CPU cores): 10,000 steps, a record every 250. The
paper's length, five times as long:

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
    fit_in_records, outdir_field, RecordEveryEpoch, save_results, seed_field, verbose_field)

TITLE = TITLES["paper_figure"]

HIDDEN_UNITS = (100, 100, 100)
PERCENTILES = (15, 50, 85)
LAST_HIDDEN_ACTIVATION = f"dense{len(HIDDEN_UNITS)}_sigmoid"
EVALUATION_BATCH_SIZE = 1000


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
    dataset: str = dataset_field()
    seed: int = seed_field()
    outdir: str = outdir_field("paper_figure")
    verbose: int = verbose_field(0, "record")

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "steps", "record_every", "batch_size", "probe_size")
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


def run(config: Config | None = None, arrays=None) -> dict:
    config = config or Config()
    arrays = dataset_arrays(arrays, config.dataset)
    (x_train, _), (x_test, y_test) = arrays
    probe_images = data.normalize_images(x_train[:config.probe_size], flat=True)
    test_images = data.normalize_images(x_test, flat=True)
    print(f"paper figure: {config.steps} steps of batch {config.batch_size}, SGD "
          f"{config.learning_rate:g}, sigmoid {config.unit} of the last hidden layer")

    results = {}
    for bn in ("none", config.bn):
        keras.utils.set_random_seed(config.seed)
        # A new pipeline for every run: iterating a dataset again reshuffles it differently,
        # and every run must see the same batches in the same order.
        train_dataset, _ = data.mnist_datasets(config.batch_size, flat=True,
                                               seed=config.seed, arrays=arrays)
        model = build_model(bn)
        model.compile(optimizer=keras.optimizers.SGD(config.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        recorder = SigmoidInputPercentiles(probe_images, config.unit)
        history, seconds = fit_in_records(
            model, train_dataset, config, callbacks=[recorder],
            validation_data=(test_images, y_test), validation_batch_size=EVALUATION_BATCH_SIZE)
        accuracies = [float(a) for a in history.history["val_accuracy"]]
        percentiles = np.array(recorder.percentiles)
        name = "without_bn" if bn == "none" else "with_bn"
        results[name] = {
            "label": "without BN" if bn == "none" else "with BN",
            "final_test_accuracy": accuracies[-1],
            "test_accuracy": accuracies,
            "accuracy_steps": recorder.steps[1:],
            "percentile_steps": recorder.steps,
            **{f"percentile_{p}": percentiles[:, i].tolist()
               for i, p in enumerate(PERCENTILES)},
            "median_range": float(np.ptp(percentiles[:, 1])),
            "training_seconds": round(seconds, 1),
        }
        print(f"{results[name]['label']:>10}: final test accuracy {accuracies[-1]:.4f}; "
              f"sigmoid input median {percentiles[0, 1]:+.2f} at step 0, "
              f"{percentiles[-1, 1]:+.2f} at the end (15th-85th: "
              f"{percentiles[-1, 0]:+.2f} to {percentiles[-1, 2]:+.2f}); {seconds:.0f} s")

    metrics = {"experiment": "paper_figure", "percentiles": list(PERCENTILES),
               "networks": results}
    save_results(config.outdir, metrics, _figure(results, config), config)
    return metrics


def _figure(results: dict, config: Config):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 4.5), layout="constrained")
    accuracy_axes, *percentile_axes = figure.subplots(1, 3)
    for (name, result), color in zip(results.items(), ("tab:gray", "tab:blue")):
        accuracy_axes.plot(result["accuracy_steps"], result["test_accuracy"], color=color,
                           linestyle="--" if name == "without_bn" else "-",
                           label=result["label"])
    accuracy_axes.set(title="(a) test accuracy", xlabel="training step",
                      ylabel="test accuracy")
    accuracy_axes.legend(loc="lower right")
    accuracy_axes.grid(alpha=0.3)

    percentile_axes[1].sharey(percentile_axes[0])
    for axes, (letter, result) in zip(percentile_axes, zip("bc", results.values())):
        for percentile, style in zip(PERCENTILES, (":", "-", "--")):
            axes.plot(result["percentile_steps"], result[f"percentile_{percentile}"],
                      color="black", linestyle=style, label=f"{percentile}th percentile")
        axes.set(title=f"({letter}) {result['label']}: input of sigmoid {config.unit}, "
                       f"last hidden layer",
                 xlabel="training step", ylabel="sigmoid input")
        axes.grid(alpha=0.3)
    figure.legend(*percentile_axes[0].get_legend_handles_labels(), loc="outside lower right",
                  ncols=len(PERCENTILES))
    figure.suptitle(f"Ioffe & Szegedy (2015), Figure 1: 784-100-100-100-10 sigmoid network, "
                    f"batch {config.batch_size}, SGD {config.learning_rate:g}, "
                    f"{config.steps} steps")
    return figure

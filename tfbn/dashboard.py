"""The codelab's six-panel dashboard, recorded while `model.fit` runs and saved as a PNG.

Panels: accuracy and cross-entropy (train and test) over training steps; percentile bands
over time of each layer's weights and of each layer's activations; training digits and test
digits, misclassified ones on a red background with the predicted label in their corner.

Every `every_n_batches` optimizer steps, and at the end of each epoch, `Dashboard` evaluates
the model in inference mode on fixed samples of the training and test sets (the first
`sample_size` digits of each), so both curves are measured the same way and cost little.
Activations are measured on the first `ACTIVATION_SAMPLE_SIZE` training-sample digits, as
the codelab's BN steps plot them: each activation's maximum over those digits (its
`tf.reduce_max(Y, [0])`), whose percentiles over a layer's units are drawn. A ReLU's
output is 0 for about half its inputs, so percentiles of the raw values sit at 0 and hide
what BN does; the batch maximum shows how far each unit fires.

The recorded series live in `<logdir>/dashboard.json`, rewritten atomically each epoch and
reloaded on construction, so a resumed run's `<logdir>/dashboard.png` shows its whole
history. `save_dashboard(load_history(json_path), png_path)` redraws the figure from it.
"""

import json
from pathlib import Path

import keras
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tfbn.files import save_figure_atomically, write_json_atomically
from tfbn.digits import DIGIT_SIDE, digit_mosaic, ink, tile_corner
from tfbn.rundir import DASHBOARD

HISTORY_FILE = DASHBOARD
FIGURE_FILE = "dashboard.png"
HISTORY_FORMAT = "tfbn-dashboard/1"
PERCENTILES = (0, 5, 25, 50, 75, 95, 100)
# What the activation strips summarize. A history written before this key existed holds
# percentiles of the raw activations, and a resumed run goes on recording those.
BATCH_MAXIMUM = "maximum over the digits"
ACTIVATION_SAMPLE_SIZE = 100
DIGITS_SHOWN = 100
DIGIT_COLUMNS = 10
PANEL_TITLES = (
    "Accuracy",
    "Cross-entropy loss",
    "Training digits",
    "Weights: percentiles per layer",
    "Activations: percentiles per layer",
    "Test digits",
)


class Dashboard(keras.callbacks.Callback):
    """Records the dashboard's series during `fit` and saves `<logdir>/dashboard.png` at the end.

    Images are given as the model takes them (same scaling as the training data); they are
    reshaped to the model's input shape if needed. The model must end in a softmax.
    With `live=True` and a display, a matplotlib window is redrawn at every record.
    """

    def __init__(self, logdir, train_images, train_labels, test_images, test_labels,
                 every_n_batches=100, live=False, sample_size=1000):
        super().__init__()
        if not isinstance(every_n_batches, int) or every_n_batches < 1:
            raise ValueError(f"every_n_batches must be a positive integer, got {every_n_batches!r}")
        self.logdir = Path(logdir)
        self.every_n_batches = every_n_batches
        self.train_images, self.train_labels = _sample(
            "train", train_images, train_labels, sample_size)
        self.test_images, self.test_labels = _sample("test", test_images, test_labels, sample_size)
        self.history_path = self.logdir / HISTORY_FILE
        self.history = (load_history(self.history_path) if self.history_path.exists()
                        else new_history(len(self.train_labels), len(self.test_labels)))
        self.live_figure = open_live_figure() if live else None
        self._session_started = False
        self._predictions = None

    def on_train_begin(self, logs=None):
        # Checkpoint restores (EpochCheckpoint) run in on_train_begin too, possibly after
        # this one, so the step is only trustworthy from the first epoch on.
        self._session_started = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._session_started:
            return
        self._session_started = True
        input_shape = tuple(self.model.inputs[0].shape[1:])
        self._train_inputs = self.train_images.reshape((-1, *input_shape))
        self._test_inputs = self.test_images.reshape((-1, *input_shape))
        self._weighted_layers = [layer for layer in self.model.layers if hasattr(layer, "kernel")]
        activation_layers = _activation_layers(self.model)
        model_input = self.model.inputs[0] if len(self.model.inputs) == 1 else self.model.inputs
        self._activation_probe = (
            keras.Model(model_input, [layer.output for layer in activation_layers])
            if activation_layers else None)
        step = self._step()
        # Records past this step belong to a session whose end the restored model never saw;
        # a model starting from step 0 is a new run, whose history starts afresh.
        truncate_history(self.history, step)
        if not self.history["steps"]:
            self.history = new_history(len(self.train_labels), len(self.test_labels))
        self._check_layers("weights", [layer.name for layer in self._weighted_layers])
        self._check_layers("activations", [layer.name for layer in activation_layers])
        if not self.history["steps"]:
            self._record(step)

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step % self.every_n_batches == 0:
            self._record(step)

    def on_epoch_end(self, epoch, logs=None):
        step = self._step()
        if self.history["steps"][-1] != step:
            self._record(step)
        self.history["epoch_end_steps"].append(step)
        if logs and "val_accuracy" in logs:  # the whole test set, as fit evaluated it
            self.history.setdefault("full_test_accuracy", []).append(
                [step, float(np.squeeze(logs["val_accuracy"]))])
        self._save_history()

    def on_train_end(self, logs=None):
        self._save_history()
        self.logdir.mkdir(parents=True, exist_ok=True)
        save_dashboard(self.history, self.logdir / FIGURE_FILE)

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def _check_layers(self, kind, names):
        recorded = self.history[kind]
        if recorded and len(recorded) != len(names):
            raise ValueError(
                f"{self.history_path} records {kind} of {len(recorded)} layers "
                f"({', '.join(series['layer'] for series in recorded)}) but the model has "
                f"{len(names)} ({', '.join(names)}); use a new logdir for a different model")
        if not recorded:
            self.history[kind] = [{"layer": name, "percentiles": []} for name in names]
        for series, name in zip(self.history[kind], names):
            series["layer"] = name

    def _record(self, step):
        train_probabilities = self._predict(self._train_inputs)
        test_probabilities = self._predict(self._test_inputs)
        history = self.history
        history["steps"].append(step)
        for split, probabilities, labels in (("train", train_probabilities, self.train_labels),
                                             ("test", test_probabilities, self.test_labels)):
            history[f"{split}_accuracy"].append(_accuracy(probabilities, labels))
            history[f"{split}_loss"].append(_cross_entropy(probabilities, labels))
        for series, layer in zip(history["weights"], self._weighted_layers):
            series["percentiles"].append(_percentiles(layer.kernel))
        if self._activation_probe is not None:
            activations = self._activation_probe(
                self._train_inputs[:ACTIVATION_SAMPLE_SIZE], training=False)
            if not isinstance(activations, (list, tuple)):
                activations = [activations]
            batch_maximum = history.get("activation_statistic") == BATCH_MAXIMUM
            for series, values in zip(history["activations"], activations):
                values = np.max(np.asarray(values), axis=0) if batch_maximum else values
                series["percentiles"].append(_percentiles(values))
        self._predictions = (train_probabilities.argmax(-1), test_probabilities.argmax(-1))
        if self.live_figure is not None:
            self._update_digits()
            render_dashboard(history, self.live_figure)
            self.live_figure.canvas.draw_idle()
            self.live_figure.canvas.flush_events()

    def _predict(self, images):
        probabilities = np.concatenate([
            np.asarray(self.model(images[start:start + 500], training=False), dtype=np.float64)
            for start in range(0, len(images), 500)])
        if probabilities.min() < 0 or not np.allclose(probabilities.sum(-1), 1, atol=1e-3):
            raise ValueError("Dashboard needs a model whose outputs are softmax probabilities; "
                             f"{self.model.name!r} outputs rows summing to "
                             f"{probabilities.sum(-1)[:3]}...")
        return probabilities

    def _update_digits(self):
        if self._predictions is None:
            return
        train_predictions, test_predictions = self._predictions
        self.history["digits"] = {
            "train": digits_record(self.train_images, self.train_labels, train_predictions,
                                   errors_first=False),
            "test": digits_record(self.test_images, self.test_labels, test_predictions,
                                  errors_first=True),
        }

    def _save_history(self):
        self._update_digits()
        self.logdir.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.history_path, self.history, compact=True)


def new_history(train_sample_size, test_sample_size):
    """An empty dashboard history (the structure `dashboard.json` holds)."""
    return {
        "format": HISTORY_FORMAT,
        "percentiles": list(PERCENTILES),
        "sample_sizes": {"train": train_sample_size, "test": test_sample_size,
                         "activations": min(ACTIVATION_SAMPLE_SIZE, train_sample_size)},
        "steps": [],
        "train_accuracy": [], "train_loss": [], "test_accuracy": [], "test_loss": [],
        "epoch_end_steps": [],
        "weights": [],
        "activations": [],
        "activation_statistic": BATCH_MAXIMUM,
        "digits": None,
    }


def load_history(path):
    """The dashboard history saved in `path` (a `dashboard.json`)."""
    path = Path(path)
    try:
        history = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read dashboard history {str(path)!r}: {error}") from None
    if not isinstance(history, dict) or history.get("format") != HISTORY_FORMAT:
        raise ValueError(f"{str(path)!r} is not a dashboard history (format {HISTORY_FORMAT})")
    return history


def truncate_history(history, last_step):
    """Drops, in place, the records made after optimizer step `last_step`."""
    kept = sum(step <= last_step for step in history["steps"])
    for key in ("steps", "train_accuracy", "train_loss", "test_accuracy", "test_loss"):
        del history[key][kept:]
    for series in history["weights"] + history["activations"]:
        del series["percentiles"][kept:]
    history["epoch_end_steps"] = [step for step in history["epoch_end_steps"] if step <= last_step]
    history["full_test_accuracy"] = [record for record in history.get("full_test_accuracy", [])
                                     if record[0] <= last_step]


def digits_record(images, labels, predictions, errors_first):
    """The digits a panel shows: `DIGITS_SHOWN` of them as 0-255 ints, labels, predictions."""
    wrong = predictions != labels
    order = np.argsort(~wrong, kind="stable") if errors_first else np.arange(len(labels))
    shown = order[:DIGITS_SHOWN]
    shown_pixels = np.round(255 * ink(images)[shown]).astype(int).reshape(len(shown), -1)
    return {
        "images": shown_pixels.tolist(),
        "labels": labels[shown].tolist(),
        "predictions": predictions[shown].tolist(),
        "misclassified": int(wrong.sum()),
        "sample_size": len(labels),
        "errors_first": errors_first,
    }


def save_dashboard(history, path):
    """Renders `history` (from `Dashboard` or `load_history`) into the PNG file `path`."""
    path = Path(path)
    figure = render_dashboard(history)
    save_figure_atomically(figure, path)
    return figure


def render_dashboard(history, figure=None):
    """Draws the six panels of `history` on `figure` (a new 18x10-inch figure by default).

    The weights and activations panels are stacks of one strip per layer, each on its own
    scale. Every axes is labelled (`axes.get_label()`) with its panel: "accuracy", "loss",
    "train_digits", "test_digits", "weights:<layer>", "activations:<layer>".
    """
    if figure is None:
        figure = Figure(figsize=(18, 10), dpi=100)
    figure.clear()
    grid = figure.add_gridspec(2, 3, width_ratios=(1.15, 1.15, 1), hspace=0.3, wspace=0.22)
    steps = history["steps"]
    accuracy_axes = figure.add_subplot(grid[0, 0], label="accuracy")
    _plot_metric(accuracy_axes, history, "accuracy", PANEL_TITLES[0], "accuracy")
    _set_accuracy_limits(accuracy_axes, _zoomed_limits(
        [history["train_accuracy"], history["test_accuracy"]], steps))
    loss_axes = figure.add_subplot(grid[0, 1], label="loss")
    _plot_metric(loss_axes, history, "loss", PANEL_TITLES[1], "cross-entropy")
    loss_axes.set_ylim(_zoomed_limits(
        [history["train_loss"], history["test_loss"]], steps, lower=0.0))
    _plot_layer_strips(figure, grid[1, 0], "weights", history, PANEL_TITLES[3])
    digits_measured = history["sample_sizes"]["activations"]
    _plot_layer_strips(
        figure, grid[1, 1], "activations", history,
        f"{PANEL_TITLES[4]} of each unit's maximum over {digits_measured} training digits"
        if history.get("activation_statistic") == BATCH_MAXIMUM
        else f"{PANEL_TITLES[4]} ({digits_measured} training digits)")
    digits = history["digits"] or {}
    _plot_digits(figure.add_subplot(grid[0, 2], label="train_digits"), digits.get("train"),
                 PANEL_TITLES[2])
    _plot_digits(figure.add_subplot(grid[1, 2], label="test_digits"), digits.get("test"),
                 PANEL_TITLES[5])
    if steps:
        full = history.get("full_test_accuracy") or []
        whole_test_set = (f"; {full[-1][1]:.2%} on the whole test set at the last epoch's "
                          f"end (step {full[-1][0]})" if full else "")
        figure.suptitle(
            f"step {steps[-1]}, on the plotted samples: test accuracy "
            f"{history['test_accuracy'][-1]:.2%} ({history['sample_sizes']['test']} digits), "
            f"train {history['train_accuracy'][-1]:.2%} "
            f"({history['sample_sizes']['train']} digits){whole_test_set}", fontsize=14)
    figure.subplots_adjust(left=0.05, right=0.99, top=0.91, bottom=0.06)
    return figure


def open_live_figure():
    """An interactive matplotlib figure, or None (after saying so) when no display exists."""
    import matplotlib.pyplot as pyplot
    from matplotlib.backends import BackendFilter, backend_registry

    interactive = backend_registry.list_builtin(BackendFilter.INTERACTIVE)
    if pyplot.get_backend().lower() not in interactive:
        print("live dashboard unavailable: no display; dashboard.png is still saved at the end")
        return None
    pyplot.ion()
    figure = pyplot.figure("tfbn dashboard", figsize=(18, 10))
    pyplot.show(block=False)
    return figure


def _sample(split, images, labels, sample_size):
    images = np.asarray(images, dtype=np.float32)[:sample_size]
    labels = np.asarray(labels).astype(np.int64).reshape(-1)[:sample_size]
    if len(images) == 0:
        raise ValueError(f"{split}_images is empty: the dashboard needs digits to evaluate")
    if len(images) != len(labels):
        raise ValueError(f"{split}_images has {len(images)} digits in its first {sample_size} "
                         f"but {split}_labels has {len(labels)} labels")
    if images[0].size != DIGIT_SIDE * DIGIT_SIDE:
        raise ValueError(f"{split}_images must hold 28x28 digits; got shape {images.shape}")
    return images, labels


def _activation_layers(model):
    """Layers whose output is a hidden nonlinearity (not the model's output layer)."""
    layers = []
    for layer in model.layers:
        if any(layer.output is output for output in model.outputs):
            continue
        activation = getattr(layer, "activation", None)
        if isinstance(layer, (keras.layers.Activation, keras.layers.ReLU)) or (
                activation is not None and activation is not keras.activations.linear):
            layers.append(layer)
    return layers


def _accuracy(probabilities, labels):
    return float(np.mean(probabilities.argmax(-1) == labels))


def _cross_entropy(probabilities, labels):
    # Same clipping as Keras's crossentropy, so a confident mistake costs log(1e7), not inf.
    chosen = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(chosen, 1e-7, 1.0))))


def _percentiles(values):
    return [float(value) for value in
            np.percentile(np.asarray(values, dtype=np.float32), PERCENTILES)]


SHORT_RUN_RECORDS = 10


def _zoomed_limits(curves, steps, lower=None, upper=None):
    """Y limits fitted to the curves after the first tenth of training, like the codelab's zoom.

    The first steps (accuracy near 10%, loss near 2.3) would otherwise squash the part of
    the curves where runs differ.
    """
    if not steps:
        return (0.0 if lower is None else lower, 1.0 if upper is None else upper)
    # A short run (a few records) is shown whole: there is no settled part to zoom on.
    start = 0 if len(steps) < SHORT_RUN_RECORDS else next(
        index for index, step in enumerate(steps) if step >= steps[-1] / 10)
    settled = [value for curve in curves for value in curve[start:]]
    low, high = min(settled), max(settled)
    margin = max(0.1 * (high - low), 0.01)
    return (low - margin if lower is None else max(low - margin, lower),
            high + margin if upper is None else min(high + margin, upper))


def _set_accuracy_limits(axes, limits):
    """The zoomed limits, never past 1.0 in the ticks, with a sliver of room above 1.0 so
    that a training curve at 100% stays visible on the axis' edge."""
    low, high = limits[0], min(limits[1], 1.0)
    ticks = [tick for tick in MaxNLocator(6).tick_values(low, high) if low <= tick <= 1.0]
    axes.set_yticks(ticks)
    axes.set_ylim(low, high + 0.015 * (high - low))


def _mark_epochs(axes, epoch_end_steps):
    for step in epoch_end_steps:
        axes.axvline(step, color="0.85", linewidth=0.8, zorder=0)


def _plot_metric(axes, history, metric, title, ylabel):
    """Train and test curves of `metric` over steps."""
    _mark_epochs(axes, history["epoch_end_steps"])
    sizes = history["sample_sizes"]
    for split, colour in (("train", "tab:blue"), ("test", "tab:orange")):
        axes.plot(history["steps"], history[f"{split}_{metric}"], color=colour,
                  label=f"{split} ({sizes[split]} digits)")
    axes.set_title(title)
    axes.set_xlabel("training step (grey lines: epoch ends)")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right" if metric == "accuracy" else "upper right")


def _plot_layer_strips(figure, cell, kind, history, title):
    """One strip per layer: 5-95 and 25-75 percentile bands, median, dotted min and max.

    Each strip is zoomed like the metric panels: the first tenth of training may overflow.
    """
    layer_series = history[kind]
    steps = history["steps"]
    percentiles = history["percentiles"]
    if not layer_series:
        axes = figure.add_subplot(cell, label=kind)
        axes.set_title(title)
        axes.set_axis_off()
        axes.text(0.5, 0.5, f"no {kind} recorded (none yet, or no such layers)",
                  ha="center", va="center",
                  transform=axes.transAxes)
        return
    index = {percentile: position for position, percentile in enumerate(percentiles)}
    strips = cell.subgridspec(len(layer_series), 1, hspace=0.08)
    top_axes = None
    for number, series in enumerate(layer_series):
        axes = figure.add_subplot(strips[number], sharex=top_axes,
                                  label=f"{kind}:{series['layer']}")
        top_axes = top_axes or axes
        colour = f"C{number % 10}"
        values = np.asarray(series["percentiles"]).reshape(len(steps), len(percentiles))
        _mark_epochs(axes, history["epoch_end_steps"])
        axes.fill_between(steps, values[:, index[5]], values[:, index[95]], color=colour,
                          alpha=0.2, linewidth=0)
        axes.fill_between(steps, values[:, index[25]], values[:, index[75]], color=colour,
                          alpha=0.45, linewidth=0)
        axes.plot(steps, values[:, index[50]], color=colour, linewidth=1.5)
        for extreme in (0, 100):
            axes.plot(steps, values[:, index[extreme]], color=colour, linewidth=0.8,
                      linestyle=":")
        axes.text(0.01, 0.92, series["layer"], transform=axes.transAxes, fontsize=9,
                  va="top", ha="left", color=colour, fontweight="bold",
                  bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1})
        axes.set_ylim(_zoomed_limits(list(values.T), steps))
        axes.yaxis.set_major_locator(MaxNLocator(3))
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        if number < len(layer_series) - 1:
            axes.tick_params(labelbottom=False)
    top_axes.set_title(f"{title}\nmedian, bands 25-75 and 5-95, dotted min and max")
    axes.set_xlabel("training step")


def _plot_digits(axes, record, title):
    axes.set_axis_off()
    if record is None:
        axes.set_title(title)
        axes.text(0.5, 0.5, "no digits recorded yet", ha="center", va="center",
                  transform=axes.transAxes)
        return
    images = np.asarray(record["images"], dtype=np.float64).reshape(-1, DIGIT_SIDE, DIGIT_SIDE)
    labels = np.asarray(record["labels"])
    predictions = np.asarray(record["predictions"])
    wrong = predictions != labels
    axes.imshow(digit_mosaic(images / 255.0, wrong, DIGIT_COLUMNS), interpolation="nearest")
    for position in np.flatnonzero(wrong):
        axes.text(*tile_corner(position, DIGIT_COLUMNS), str(predictions[position]),
                  color="darkred", fontsize=8, fontweight="bold", ha="left", va="top")
    shown = f"{len(labels)}, wrong first" if record["errors_first"] else f"first {len(labels)}"
    axes.set_title(f"{title}: {record['misclassified']} of {record['sample_size']} "
                   f"misclassified\n({shown}; red: wrong, corner: predicted)")



"""Comparing finished runs: test curves overlaid in one figure, final metrics in a table.

A run directory is what `tfbn run --logdir DIR` leaves: `metrics.json` (final metrics) and
`history.csv` (one row per epoch; `val_*` columns are the test set); `tfbn.rundir` owns both.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tfbn.files import save_figure_atomically
from tfbn.rundir import read_finished_run

LINE_STYLES = ("-", "--", ":", "-.")


@dataclass
class Run:
    """One finished run: its directory, final metrics and per-epoch test curves."""

    directory: Path
    metrics: dict
    epochs: list
    test_accuracy: list
    test_loss: list

    @property
    def label(self):
        return f"{self.metrics['step']} {self.metrics['bn']}"


def compare_runs(run_dirs, output_png, allow_mixed_steps=False):
    """Saves the overlaid test curves of `run_dirs` to `output_png`; returns a Markdown table.

    Runs of different codelab steps are refused unless `allow_mixed_steps` is true.
    """
    runs = load_runs(run_dirs, allow_mixed_steps=allow_mixed_steps)
    output_png = Path(output_png)
    output_png.parent.mkdir(parents=True, exist_ok=True)
    figure = render_comparison(runs)
    save_figure_atomically(figure, output_png)
    return markdown_table(runs)


def default_comparison_path(run_dirs) -> Path:
    """comparison.png beside the runs: in the deepest directory that holds them all
    (`runs/comparison.png` for `runs/a runs/b`), never the working directory by default."""
    parents = [str(Path(directory).resolve().parent) for directory in run_dirs]
    return Path(os.path.commonpath(parents)) / "comparison.png"


def load_runs(run_dirs, allow_mixed_steps=False):
    """The runs in `run_dirs`, checked to be runs and (unless allowed) of the same step."""
    run_dirs = [Path(directory) for directory in run_dirs]
    if not run_dirs:
        raise ValueError("run_dirs is empty: give at least one run directory to compare")
    runs = [load_run(directory) for directory in run_dirs]
    step_names = {str(run.metrics["step"]) for run in runs}
    if len(step_names) > 1 and not allow_mixed_steps:
        listing = ", ".join(f"{run.directory} is step {run.metrics['step']}" for run in runs)
        raise ValueError(f"runs of different steps cannot be compared ({listing}); "
                         "to overlay them anyway, pass --allow-mixed-steps (allow_mixed_steps=True)")
    return runs


def load_run(directory):
    """The run saved in `directory`; ValueError if it is not a finished run."""
    directory = Path(directory)
    metrics, history = read_finished_run(directory)
    epochs = [int(epoch) + 1 for epoch in history["epoch"]]
    return Run(directory, metrics, epochs, history["val_accuracy"], history["val_loss"])


def _legend_labels(runs):
    """"step bn" per run, with the directory name added where two runs would share one."""
    labels = [run.label for run in runs]
    return [f"{label} ({run.directory.name})" if labels.count(label) > 1 else label
            for label, run in zip(labels, runs)]


def render_comparison(runs):
    """A figure with test accuracy and test loss per epoch, one line per run."""
    figure = Figure(figsize=(13, 5), dpi=100)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for number, (run, label) in enumerate(zip(runs, _legend_labels(runs))):
        # Runs can coincide exactly (tfbn.BatchNorm and Keras's layer, same seed), so each
        # also gets its own dash pattern: the later line never hides the earlier one.
        style = {"linestyle": LINE_STYLES[number % len(LINE_STYLES)], "label": label,
                 "marker": "o" if len(run.epochs) <= 20 else None, "markersize": 4}
        accuracy_axes.plot(run.epochs, run.test_accuracy, **style)
        loss_axes.plot(run.epochs, run.test_loss, **style)
    for axes, title, ylabel in ((accuracy_axes, "Test accuracy", "accuracy"),
                                (loss_axes, "Test loss", "cross-entropy")):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(title="step bn")
    steps = sorted({str(run.metrics["step"]) for run in runs})
    figure.suptitle(f"{len(runs)} run(s) of step {', '.join(steps)}: test set after each epoch")
    figure.tight_layout()
    return figure


def markdown_table(runs):
    """The runs' final metrics as a Markdown table, one row per run."""
    header = ("run", "step", "bn", "test accuracy", "best test accuracy", "test loss",
              "epochs", "training steps", "time", "device")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        metrics = run.metrics
        cells = (run.directory.name, metrics["step"], metrics["bn"],
                 f"{metrics['test_accuracy']:.2%}", f"{metrics['best_test_accuracy']:.2%}",
                 f"{metrics['test_loss']:.4f}", metrics["epochs"], metrics["steps"],
                 f"{metrics['seconds']:.0f} s", metrics["device"])
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"

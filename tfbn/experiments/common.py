"""What every experiment does the same way: its data, its output files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from tfbn import data  # noqa: E402
from tfbn.training import versions, write_json_atomically  # noqa: E402


def dataset_arrays(arrays=None, dataset: str = "mnist"):
    """`arrays` when given (tests pass tiny ones), else the real dataset."""
    return arrays if arrays is not None else data.load_mnist(dataset)


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

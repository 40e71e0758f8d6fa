"""Comparing runs: two tiny real runs, their overlaid curves and table, and bad inputs."""

import csv
import json
import shutil

import keras
import matplotlib.image
import numpy as np
import pytest

from tfbn.compare import compare_runs, load_run, load_runs, render_comparison

EPOCHS = 3


def tiny_run(directory, arrays, bn, step="4.2"):
    """Trains a small model for EPOCHS epochs and leaves a run directory like `tfbn run`."""
    (x_train, y_train), (x_test, y_test) = arrays
    x_train = (x_train / 255.0).astype(np.float32).reshape(-1, 784)
    x_test = (x_test / 255.0).astype(np.float32).reshape(-1, 784)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((784,))
    x = keras.layers.Dense(16, use_bias=bn == "none")(inputs)
    if bn != "none":
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    directory.mkdir(parents=True)
    model.fit(x_train, y_train, batch_size=16, epochs=EPOCHS, validation_data=(x_test, y_test),
              callbacks=[keras.callbacks.CSVLogger(str(directory / "history.csv"))], verbose=0)
    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    history = model.history.history
    metrics = {"step": step, "test_accuracy": test_accuracy,
               "best_test_accuracy": max(history["val_accuracy"]), "test_loss": test_loss,
               "epochs": EPOCHS, "steps": int(model.optimizer.iterations.numpy()),
               "seconds": 1.5, "device": "CPU", "bn": bn, "versions": {"keras": keras.__version__}}
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return history


@pytest.fixture(scope="module")
def two_runs(tiny_mnist, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    histories = {bn: tiny_run(root / f"run_{bn}", tiny_mnist, bn) for bn in ("keras", "none")}
    return {"dirs": [root / "run_keras", root / "run_none"], "histories": histories,
            "root": root}


def copy_run(source, destination, **metric_changes):
    shutil.copytree(source, destination)
    metrics = json.loads((destination / "metrics.json").read_text())
    metrics.update(metric_changes)
    (destination / "metrics.json").write_text(json.dumps(metrics))
    return destination


def test_table_has_one_row_per_run_with_final_metrics(two_runs, tmp_path):
    table = compare_runs(two_runs["dirs"], tmp_path / "compare.png")
    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| run | step | bn | test accuracy |")
    for line, directory in zip(lines[2:], two_runs["dirs"]):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        metrics = json.loads((directory / "metrics.json").read_text())
        assert cells[:3] == [directory.name, "4.2", metrics["bn"]]
        assert cells[3] == f"{metrics['test_accuracy']:.2%}"
        assert cells[5] == f"{metrics['test_loss']:.4f}"
        assert cells[7] == str(metrics["steps"])


def test_png_overlays_the_runs(two_runs, tmp_path):
    output = tmp_path / "figures" / "compare.png"
    compare_runs(two_runs["dirs"], output)
    picture = matplotlib.image.imread(output)
    assert picture.shape[:2] == (500, 1300)
    assert picture[..., :3].std() > 0.05


def test_figure_has_accuracy_and_loss_curves_per_run(two_runs):
    figure = render_comparison(load_runs(two_runs["dirs"]))
    accuracy_axes, loss_axes = figure.axes
    assert accuracy_axes.get_title() == "Test accuracy"
    assert loss_axes.get_title() == "Test loss"
    for axes, column in ((accuracy_axes, "val_accuracy"), (loss_axes, "val_loss")):
        assert axes.get_xlabel() == "epoch" and axes.get_ylabel()
        legend = axes.get_legend()
        assert legend.get_title().get_text() == "step bn"
        assert [text.get_text() for text in legend.get_texts()] == ["4.2 keras", "4.2 none"]
        for line, bn in zip(axes.get_lines(), ("keras", "none")):
            assert list(line.get_xdata()) == list(range(1, EPOCHS + 1))
            np.testing.assert_allclose(line.get_ydata(), two_runs["histories"][bn][column],
                                       rtol=1e-6)


def test_runs_sharing_a_label_are_told_apart(two_runs, tmp_path):
    twin = copy_run(two_runs["dirs"][0], tmp_path / "run_keras_again")
    figure = render_comparison(load_runs([two_runs["dirs"][0], twin]))
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels == ["4.2 keras (run_keras)", "4.2 keras (run_keras_again)"]


def test_repeated_epoch_of_a_resumed_run_keeps_the_last_row(two_runs, tmp_path):
    resumed = copy_run(two_runs["dirs"][0], tmp_path / "resumed")
    with open(resumed / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    redone = dict(rows[1], val_accuracy="0.123")
    with open(resumed / "history.csv", "a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=list(rows[0])).writerow(redone)
    run = load_run(resumed)
    assert run.epochs == list(range(1, EPOCHS + 1))
    assert run.test_accuracy[1] == pytest.approx(0.123)


def test_a_directory_that_is_not_a_run_is_named(two_runs, tmp_path):
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    with pytest.raises(ValueError, match=r"notes.* is not a finished run: it has no metrics.json"):
        compare_runs([two_runs["dirs"][0], not_a_run], tmp_path / "compare.png")
    with pytest.raises(ValueError, match="missing.* is not a directory"):
        compare_runs([tmp_path / "missing"], tmp_path / "compare.png")
    assert not (tmp_path / "compare.png").exists()


def test_runs_of_different_steps_are_refused_unless_allowed(two_runs, tmp_path):
    other_step = copy_run(two_runs["dirs"][1], tmp_path / "run_step_3", step="3.0")
    dirs = [two_runs["dirs"][0], other_step]
    with pytest.raises(ValueError, match=r"different steps.*is step 4\.2.*is step 3\.0"):
        compare_runs(dirs, tmp_path / "compare.png")
    table = compare_runs(dirs, tmp_path / "compare.png", allow_mixed_steps=True)
    assert "| 3.0 |" in table and "| 4.2 |" in table


def test_incomplete_runs_are_reported(two_runs, tmp_path):
    no_history = copy_run(two_runs["dirs"][0], tmp_path / "no_history")
    (no_history / "history.csv").unlink()
    with pytest.raises(ValueError, match="no_history.* has metrics.json but no history.csv"):
        load_run(no_history)
    lacking = copy_run(two_runs["dirs"][0], tmp_path / "lacking")
    metrics = json.loads((lacking / "metrics.json").read_text())
    del metrics["test_loss"]
    (lacking / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="metrics.json' lacks test_loss"):
        load_run(lacking)
    broken = copy_run(two_runs["dirs"][0], tmp_path / "broken")
    (broken / "metrics.json").write_text("{")
    with pytest.raises(ValueError, match="cannot read .*metrics.json: Expecting property name"):
        load_run(broken)
    no_columns = copy_run(two_runs["dirs"][0], tmp_path / "no_columns")
    (no_columns / "history.csv").write_text("epoch,accuracy\n0,0.5\n")
    with pytest.raises(ValueError, match="lacks the column.*val_accuracy, val_loss"):
        load_run(no_columns)


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="run_dirs is empty"):
        compare_runs([], tmp_path / "compare.png")


def test_the_figure_goes_beside_the_runs_by_default(tmp_path, monkeypatch):
    from tfbn.compare import default_comparison_path

    monkeypatch.chdir(tmp_path)
    assert default_comparison_path(["runs/a", "runs/b"]) == tmp_path / "runs" / "comparison.png"
    assert default_comparison_path(["runs/x/a", "runs/y/b"]) == tmp_path / "runs" / "comparison.png"


@pytest.mark.parametrize("change, message", [
    ({"test_accuracy": "0.99"}, r"not numbers: test_accuracy='0.99'"),
    ({"seconds": None}, r"not numbers: seconds=None"),
])
def test_metrics_that_are_not_numbers_are_named(two_runs, tmp_path, change, message):
    directory = copy_run(two_runs["dirs"][0], tmp_path / "run", **change)
    with pytest.raises(ValueError, match=message):
        load_run(directory)


def test_a_history_that_is_not_text_is_named(two_runs, tmp_path):
    directory = copy_run(two_runs["dirs"][0], tmp_path / "run")
    (directory / "history.csv").write_bytes(b"epoch,val_accuracy\n\xff\xfe\x00\n")
    with pytest.raises(ValueError, match=r"cannot read .*history.csv"):
        load_run(directory)

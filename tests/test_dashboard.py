"""The codelab dashboard: recorded series, resume, the rendered figure and its PNG."""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import matplotlib.image
import numpy as np
import pytest

from tfbn.digits import digit_mosaic
from tfbn.dashboard import (
    FIGURE_FILE,
    HISTORY_FILE,
    PANEL_TITLES,
    Dashboard,
    load_history,
    render_dashboard,
    save_dashboard,
    truncate_history,
)

BATCH_SIZE = 16
EVERY_N_BATCHES = 2


def small_bn_model():
    inputs = keras.Input((784,), name="pixels")
    x = keras.layers.Dense(20, use_bias=False, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="dense_bn")(x)
    x = keras.layers.Activation("relu", name="dense_relu")(x)
    x = keras.layers.Dense(12, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def flat(images):
    return (images / 255.0).astype(np.float32).reshape(-1, 784)


def fit(model, logdir, arrays, epochs, initial_epoch=0, **dashboard_options):
    (x_train, y_train), (x_test, y_test) = arrays
    dashboard = Dashboard(logdir, flat(x_train), y_train, flat(x_test), y_test,
                          every_n_batches=EVERY_N_BATCHES, **dashboard_options)
    model.fit(flat(x_train), y_train, batch_size=BATCH_SIZE, epochs=epochs,
              initial_epoch=initial_epoch, callbacks=[dashboard], verbose=0)
    return dashboard


@pytest.fixture(scope="module")
def resumed_run(tiny_mnist, tmp_path_factory):
    """Two epochs, then a new Dashboard on the same logdir continuing for a third."""
    keras.utils.set_random_seed(0)
    logdir = tmp_path_factory.mktemp("dashboard")
    model = small_bn_model()
    fit(model, logdir, tiny_mnist, epochs=2)
    first_session = load_history(logdir / HISTORY_FILE)
    fit(model, logdir, tiny_mnist, epochs=3, initial_epoch=2)
    steps_per_epoch = len(tiny_mnist[0][1]) // BATCH_SIZE
    return {"logdir": logdir, "model": model, "first_session": first_session,
            "history": load_history(logdir / HISTORY_FILE), "steps_per_epoch": steps_per_epoch}


def test_first_session_records_every_n_batches_and_epoch_ends(resumed_run):
    history = resumed_run["first_session"]
    steps_per_epoch = resumed_run["steps_per_epoch"]
    assert history["steps"] == list(range(0, 2 * steps_per_epoch + 1, EVERY_N_BATCHES))
    assert history["epoch_end_steps"] == [steps_per_epoch, 2 * steps_per_epoch]


def test_resumed_history_keeps_the_whole_run(resumed_run):
    history = resumed_run["history"]
    steps_per_epoch = resumed_run["steps_per_epoch"]
    assert history["steps"] == list(range(0, 3 * steps_per_epoch + 1, EVERY_N_BATCHES))
    assert history["epoch_end_steps"] == [steps_per_epoch * epoch for epoch in (1, 2, 3)]
    recorded = len(resumed_run["first_session"]["steps"])
    assert history["test_accuracy"][:recorded] == resumed_run["first_session"]["test_accuracy"]


def test_metric_series_are_aligned_and_sensible(resumed_run):
    history = resumed_run["history"]
    count = len(history["steps"])
    for split in ("train", "test"):
        accuracy, loss = history[f"{split}_accuracy"], history[f"{split}_loss"]
        assert len(accuracy) == len(loss) == count
        assert all(0.0 <= value <= 1.0 for value in accuracy)
        assert all(value > 0 for value in loss)
    # The tiny digits are learnable: training moves both curves the right way.
    assert history["train_accuracy"][-1] > history["train_accuracy"][0]
    assert history["test_loss"][-1] < history["test_loss"][0]


def test_percentiles_per_layer(resumed_run):
    history = resumed_run["history"]
    assert [series["layer"] for series in history["weights"]] == ["dense", "hidden", "softmax"]
    # Hidden nonlinearities only: the Activation layer and the relu Dense, not the softmax.
    assert [series["layer"] for series in history["activations"]] == ["dense_relu", "hidden"]
    for series in history["weights"] + history["activations"]:
        percentiles = np.asarray(series["percentiles"])
        assert percentiles.shape == (len(history["steps"]), len(history["percentiles"]))
        assert np.all(np.diff(percentiles, axis=1) >= 0)
    kernel = resumed_run["model"].get_layer("dense").kernel.numpy()
    np.testing.assert_allclose(history["weights"][0]["percentiles"][-1],
                               np.percentile(kernel, history["percentiles"]), rtol=1e-5)
    relu_minimum = np.asarray(history["activations"][0]["percentiles"])[:, 0]
    assert np.all(relu_minimum >= 0)


def test_activation_strips_are_percentiles_of_each_units_maximum_over_the_digits(resumed_run,
                                                                                tiny_mnist):
    history = resumed_run["history"]
    model = resumed_run["model"]
    probe = keras.Model(model.inputs[0], model.get_layer("dense_relu").output)
    digits = flat(tiny_mnist[0][0])[:history["sample_sizes"]["activations"]]
    unit_maxima = np.max(probe(digits, training=False).numpy(), axis=0)
    assert history["activation_statistic"] == "maximum over the digits"
    np.testing.assert_allclose(history["activations"][0]["percentiles"][-1],
                               np.percentile(unit_maxima, history["percentiles"]),
                               rtol=1e-5, atol=1e-6)
    # The raw ReLU outputs' median is 0 (about half the inputs are negative); no unit's
    # maximum over the digits is.
    assert np.median(probe(digits, training=False).numpy()) == 0.0
    assert history["activations"][0]["percentiles"][-1][3] > 0.0


def test_a_history_of_raw_activation_percentiles_keeps_its_title(resumed_run):
    history = copy.deepcopy(resumed_run["history"])
    del history["activation_statistic"]  # written before the batch maximum
    titles = [axes.get_title() for axes in render_dashboard(history).axes]
    assert any(title.startswith("Activations: percentiles per layer (") for title in titles)
    titles = [axes.get_title() for axes in render_dashboard(resumed_run["history"]).axes]
    assert any(title.startswith("Activations: percentiles per layer of each unit's maximum "
                                "over 64 training digits") for title in titles)


def test_digits_are_recorded_with_misclassified_first_on_test(resumed_run):
    digits = resumed_run["history"]["digits"]
    for split in ("train", "test"):
        record = digits[split]
        assert len(record["images"]) == len(record["labels"]) == len(record["predictions"])
        assert all(len(image) == 784 and 0 <= min(image) <= max(image) <= 255
                   for image in record["images"])
    test = digits["test"]
    wrong = [label != prediction for label, prediction in zip(test["labels"], test["predictions"])]
    assert test["errors_first"] and wrong == sorted(wrong, reverse=True)
    assert sum(wrong) == min(test["misclassified"], len(wrong))


def test_png_is_saved_at_train_end(resumed_run):
    picture = matplotlib.image.imread(resumed_run["logdir"] / FIGURE_FILE)
    assert picture.shape[:2] == (1000, 1800)
    assert picture[..., :3].std() > 0.05


def test_figure_has_the_six_panels(resumed_run):
    history = resumed_run["history"]
    figure = render_dashboard(history)
    labels = [axes.get_label() for axes in figure.axes]
    assert labels == ["accuracy", "loss", "weights:dense", "weights:hidden", "weights:softmax",
                      "activations:dense_relu", "activations:hidden", "train_digits",
                      "test_digits"]
    panels = {axes.get_label(): axes for axes in figure.axes}
    titles = [panels[label].get_title() for label in
              ("accuracy", "loss", "train_digits", "weights:dense", "activations:dense_relu",
               "test_digits")]
    for title, expected in zip(titles, PANEL_TITLES):
        assert title.startswith(expected)
    assert "misclassified" in panels["test_digits"].get_title()
    for label in ("accuracy", "loss"):
        axes = panels[label]
        assert axes.get_xlabel().startswith("training step") and axes.get_ylabel()
        assert [text.get_text() for text in axes.get_legend().get_texts()] == [
            "train (64 digits)", "test (32 digits)"]
    test_line = panels["accuracy"].get_lines()[-1]
    assert list(test_line.get_xdata()) == history["steps"]
    assert list(test_line.get_ydata()) == history["test_accuracy"]


def test_save_dashboard_redraws_from_json(resumed_run, tmp_path):
    path = tmp_path / "again.png"
    save_dashboard(load_history(resumed_run["logdir"] / HISTORY_FILE), path)
    assert matplotlib.image.imread(path).shape[:2] == (1000, 1800)
    assert not (tmp_path / "again.png.tmp").exists()


def test_truncate_history_drops_records_after_a_step(resumed_run):
    history = json.loads(json.dumps(resumed_run["history"]))
    steps_per_epoch = resumed_run["steps_per_epoch"]
    truncate_history(history, steps_per_epoch)
    assert history["steps"] == list(range(0, steps_per_epoch + 1, EVERY_N_BATCHES))
    assert history["epoch_end_steps"] == [steps_per_epoch]
    for series in history["weights"] + history["activations"]:
        assert len(series["percentiles"]) == len(history["steps"])
    assert len(history["test_loss"]) == len(history["steps"])


def test_a_fresh_model_in_a_used_logdir_starts_a_new_history(resumed_run, tiny_mnist, tmp_path):
    logdir = tmp_path / "reused"
    logdir.mkdir()
    (logdir / HISTORY_FILE).write_text(json.dumps(resumed_run["history"]))
    fit(small_bn_model(), logdir, tiny_mnist, epochs=1)
    history = load_history(logdir / HISTORY_FILE)
    assert history["steps"] == list(range(0, resumed_run["steps_per_epoch"] + 1,
                                          EVERY_N_BATCHES))
    assert history["epoch_end_steps"] == [resumed_run["steps_per_epoch"]]


def test_digit_mosaic_marks_wrong_digits_red():
    ink = np.zeros((3, 28, 28))
    ink[:, 10:18, 10:18] = 1.0
    mosaic = digit_mosaic(ink, np.array([False, True, False]), columns=3)
    cell = 30
    np.testing.assert_allclose(mosaic[2, 2], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(mosaic[2, cell + 2], [1.0, 0.72, 0.72])
    np.testing.assert_allclose(mosaic[15, cell + 15], [0.0, 0.0, 0.0])


def test_live_without_display_says_so_and_trains(tiny_mnist, tmp_path, capsys):
    import matplotlib.pyplot as pyplot

    pyplot.switch_backend("agg")
    dashboard = fit(small_bn_model(), tmp_path, tiny_mnist, epochs=1, live=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if "live" in line]
    assert lines == ["live dashboard unavailable: no display; dashboard.png is still saved "
                     "at the end"]
    assert dashboard.live_figure is None
    assert (tmp_path / FIGURE_FILE).exists()


def test_model_without_softmax_outputs_is_rejected(tiny_mnist, tmp_path):
    inputs = keras.Input((784,))
    model = keras.Model(inputs, keras.layers.Dense(10)(inputs))
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="softmax"):
        fit(model, tmp_path, tiny_mnist, epochs=1)


def test_history_of_another_model_is_refused(resumed_run, tiny_mnist, tmp_path):
    logdir = tmp_path / "other"
    logdir.mkdir()
    (logdir / HISTORY_FILE).write_text(json.dumps(resumed_run["history"]))
    inputs = keras.Input((784,))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(inputs))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(resumed_run["steps_per_epoch"])
    with pytest.raises(ValueError, match="records weights of 3 layers"):
        fit(model, logdir, tiny_mnist, epochs=2, initial_epoch=1)


@pytest.mark.parametrize("options, message", [
    ({"every_n_batches": 0}, "every_n_batches must be a positive integer"),
    ({"train_labels": [1, 2]}, "train_images has 64 digits"),
    ({"test_images": np.zeros((0, 784))}, "test_images is empty"),
    ({"test_images": np.zeros((32, 30))}, "28x28"),
])
def test_bad_arguments_are_rejected(tiny_mnist, tmp_path, options, message):
    (x_train, y_train), (x_test, y_test) = tiny_mnist
    arguments = {"train_images": flat(x_train), "train_labels": y_train,
                 "test_images": flat(x_test), "test_labels": y_test, **options}
    with pytest.raises(ValueError, match=message):
        Dashboard(tmp_path, **arguments)


def test_unreadable_history_is_reported(tmp_path):
    (tmp_path / HISTORY_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="cannot read dashboard history"):
        load_history(tmp_path / HISTORY_FILE)


def test_softmax_regression_has_an_empty_activations_panel(tiny_mnist, tmp_path):
    inputs = keras.Input((784,))
    logits = keras.layers.Dense(10, name="logits")(inputs)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="softmax")(logits))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    fit(model, tmp_path, tiny_mnist, epochs=1)
    history = load_history(tmp_path / HISTORY_FILE)
    assert [series["layer"] for series in history["weights"]] == ["logits"]
    assert history["activations"] == []
    labels = [axes.get_label() for axes in render_dashboard(history).axes]
    assert labels == ["accuracy", "loss", "weights:logits", "activations", "train_digits",
                      "test_digits"]


def test_header_names_the_samples_and_the_whole_test_set(resumed_run):
    history = copy.deepcopy(resumed_run["history"])
    history["full_test_accuracy"] = [[history["steps"][-1], 0.9948]]
    title = render_dashboard(history)._suptitle.get_text()
    assert "on the plotted samples: test accuracy" in title and "(32 digits)" in title
    assert "99.48% on the whole test set at the last epoch's end" in title


def test_a_training_curve_at_100_percent_stays_inside_the_axes(resumed_run):
    history = copy.deepcopy(resumed_run["history"])
    history["train_accuracy"] = [1.0] * len(history["steps"])
    figure = render_dashboard(history)
    accuracy = next(axes for axes in figure.axes if axes.get_label() == "accuracy")
    assert accuracy.get_ylim()[1] > 1.0
    assert max(accuracy.get_yticks()) <= 1.0  # no tick for an accuracy above 100%


def test_a_short_run_shows_its_whole_curves(resumed_run):
    history = copy.deepcopy(resumed_run["history"])
    keep = 4
    truncate_history(history, history["steps"][keep - 1])
    history["train_loss"][0] = max(history["train_loss"]) + 5.0  # a high first point
    figure = render_dashboard(history)
    loss = next(axes for axes in figure.axes if axes.get_label() == "loss")
    assert loss.get_ylim()[1] >= history["train_loss"][0]


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs Xvfb (apt-get install xvfb)")
def test_live_opens_a_window_where_a_display_exists(tmp_path):
    """`tfbn run STEP --live` under a virtual X display: a Tk window, redrawn as it trains."""
    root = Path(__file__).resolve().parent.parent
    code = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from conftest import make_tiny_mnist\n"
        "import matplotlib.pyplot as pyplot\n"
        "from tfbn import training\n"
        "from tfbn.config import RunConfig\n"
        "config = RunConfig(epochs=1, steps_per_epoch=2, batch_size=16, verbose=0, live=True,"
        " logdir=sys.argv[1])\n"
        "training.train('4.1', config, arrays=make_tiny_mnist())\n"
        "figure = pyplot.figure('tfbn dashboard')\n"
        "print('backend', pyplot.get_backend(), 'axes', len(figure.axes))\n")
    result = subprocess.run(
        ["xvfb-run", "-a", sys.executable, "-c", code, str(tmp_path), str(root / "tests")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "live dashboard unavailable" not in result.stdout
    backend, name, axes, count = result.stdout.strip().splitlines()[-1].split()
    assert name.lower() == "tkagg" and int(count) >= 6

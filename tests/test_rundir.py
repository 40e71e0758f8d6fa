"""Run directories: one configuration each, never mixed or lost, locked while in use."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfbn import cli, rundir, training
from tfbn.config import RunConfig

QUICK = RunConfig(epochs=2, steps_per_epoch=2, batch_size=16, verbose=0)
ROOT = Path(__file__).resolve().parent.parent


def snapshot(directory: Path) -> dict:
    """Every file's bytes under `directory` (TensorBoard's aside), to show nothing changed."""
    return {str(path.relative_to(directory)): path.read_bytes()
            for path in sorted(directory.rglob("*"))
            if path.is_file() and path.name != rundir.LOCK
            and path.parts[len(directory.parts)] in ("config.json", "history.csv",
                                                      "metrics.json", "backup")}


@pytest.fixture
def finished_run(tiny_mnist, tmp_path):
    metrics = training.train("4.1", QUICK.replace(logdir=str(tmp_path)), arrays=tiny_mnist)
    return tmp_path, metrics


def test_resuming_with_other_options_is_refused_and_touches_nothing(finished_run, tiny_mnist,
                                                                     monkeypatch, capsys):
    logdir, _ = finished_run
    before = snapshot(logdir)
    monkeypatch.setattr(training.data, "load_mnist", lambda *args, **kwargs: tiny_mnist)
    code = cli.main(["run", "4.1", "--epochs", "3", "--steps-per-epoch", "2", "--seed", "1",
                     "--batch-size", "16", "--verbose", "0", "--logdir", str(logdir)])
    assert code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert "epochs 2 -> 3" in message and "seed 0 -> 1" in message and "--restart" in message
    assert snapshot(logdir) == before


def test_a_finished_run_reports_its_result_and_is_not_trained_again(finished_run, tiny_mnist,
                                                                     capsys):
    logdir, metrics = finished_run
    before = snapshot(logdir)
    again = training.train("4.1", QUICK.replace(logdir=str(logdir)), arrays=tiny_mnist)
    assert again == json.loads(json.dumps(metrics))
    assert snapshot(logdir) == before
    output = capsys.readouterr().out
    assert "finished: it is not trained again" in output
    assert f"test accuracy: {metrics['test_accuracy']:.4f}" in output


def test_restart_archives_the_previous_run_and_starts_over(finished_run, tiny_mnist):
    logdir, metrics = finished_run
    before = snapshot(logdir)
    again = training.train("4.1", QUICK.replace(logdir=str(logdir), restart=True, seed=1),
                           arrays=tiny_mnist)
    archived, = (logdir / rundir.ARCHIVE).iterdir()
    assert snapshot(archived) == before, "the old run is kept whole"
    assert json.loads((logdir / "config.json").read_text())["seed"] == 1
    assert rundir.read_history(logdir / "history.csv")["epoch"] == [0, 1]
    assert again["steps"] == 4 and again["test_loss"] != metrics["test_loss"]


def test_a_directory_in_use_is_refused_at_once(tmp_path):
    first = rundir.RunDirectory(tmp_path, "4.1", QUICK.to_dict())
    with pytest.raises(rundir.RunDirectoryError, match=f"in use by pid {os.getpid()}"):
        rundir.RunDirectory(tmp_path, "4.1", QUICK.to_dict())
    first.close()
    rundir.RunDirectory(tmp_path, "4.1", QUICK.to_dict()).close()


def test_the_lock_goes_when_its_process_is_killed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tfbn import rundir; "
         "held = rundir.RunDirectory(sys.argv[1], '4.1', {}); print('locked', flush=True); "
         "time.sleep(60)", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(rundir.RunDirectoryError, match=f"in use by pid {holder.pid}"):
            rundir.RunDirectory(tmp_path, "4.1", {})
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    rundir.RunDirectory(tmp_path, "4.1", {}).close()


@pytest.mark.parametrize("content, named", [("[1, 2]", "does not hold a JSON object"),
                                            ("{not json", "cannot read")])
def test_a_damaged_config_is_named_in_one_line(tmp_path, content, named):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(rundir.RunDirectoryError, match=named) as raised:
        rundir.RunDirectory(tmp_path, "4.1", {})
    assert "config.json" in str(raised.value) and "\n" not in str(raised.value)
    rundir.RunDirectory(tmp_path, "4.1", {}, restart=True).close()  # --restart moves it aside


def test_a_directory_of_other_files_is_refused_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(rundir.RunDirectoryError, match="not empty and holds no run"):
        rundir.RunDirectory(tmp_path, "4.1", {})
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "config.json").exists()


def test_a_logdir_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(rundir.RunDirectoryError, match="cannot create logdir"):
        rundir.RunDirectory(blocker / "run", "4.1", {})


@pytest.mark.parametrize("option, value", [("--seed", "-5"), ("--learning-rate-scale", "inf"),
                                           ("--learning-rate-scale", "nan")])
def test_bad_values_are_refused_before_anything_is_written(option, value, tmp_path, capsys):
    assert cli.main(["run", "4.1", option, value, "--logdir", str(tmp_path / "run")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_loss_that_is_not_a_number_stops_the_run_with_a_message():
    with pytest.raises(training.NotANumberError, match="loss became nan at batch 3"):
        training.StopOnNaN().on_train_batch_end(3, {"loss": np.float32("nan")})
    training.StopOnNaN().on_train_batch_end(3, {"loss": np.float32(2.3)})


def test_a_lesson_script_prints_a_user_error_as_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tutorials" / "step_1_0_softmax.py"),
         "--logdir", str(blocker / "run")], capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tfbn: error: cannot create logdir") and "Traceback" not in result.stderr


def test_load_model_reads_a_saved_lesson_model_in_a_fresh_process(tmp_path):
    """In a process that never imported tfbn's modules, tfbn.load_model still loads it."""
    from tfbn import steps

    model = steps.load("4.2").build_model("none")  # tfbn.models.Bias layers
    path = tmp_path / "model.keras"
    model.compile(optimizer=steps.load("4.2").make_optimizer(), loss="mse")
    model.save(path)
    code = ("import sys, numpy as np, tfbn; m = tfbn.load_model(sys.argv[1]); "
            "print(type(m.get_layer('conv1_bn')).__name__, type(m.optimizer.learning_rate))")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("Bias ")


# ---------------------------------------------------------------------------------------
# Exact resume: a run killed anywhere and started again ends as the uninterrupted run.

RESUMABLE = RunConfig(epochs=3, batch_size=16, verbose=0)  # step 2.2: dropout's masks too


class Killed(BaseException):
    """Stands for the process's death at a chosen point (a BaseException, as nothing catches)."""


@pytest.fixture(scope="module")
def uninterrupted(tiny_mnist, tmp_path_factory):
    results = {}
    for steps in (None, 3):
        logdir = tmp_path_factory.mktemp("uninterrupted")
        config = RESUMABLE.replace(logdir=str(logdir), steps_per_epoch=steps)
        results[steps] = training.train("2.2", config, arrays=tiny_mnist), logdir
    return results


def _kill_at(point: str, monkeypatch):
    """Patches the run to die in its second epoch (epoch 1) at `point`."""
    if point == "mid-epoch":
        original = training.StopOnNaN.on_train_batch_end

        def die_in_epoch_1(self, batch, logs=None):
            original(self, batch, logs)
            if int(self.model.optimizer.iterations.numpy()) == 6:
                raise Killed
        monkeypatch.setattr(training.StopOnNaN, "on_train_batch_end", die_in_epoch_1)
    elif point == "weights saved, state not":
        original = rundir.write_json_atomically

        def die_before_state(path, content):
            if path.name == rundir.STATE and content["epoch"] == 2:
                raise Killed
            original(path, content)
        monkeypatch.setattr(rundir, "write_json_atomically", die_before_state)
    elif point == "state saved, history row not":
        original = rundir.EpochCheckpoint._write_history

        def die_before_history(self):
            if len(self.rows) == 2:
                raise Killed
            original(self)
        monkeypatch.setattr(rundir.EpochCheckpoint, "_write_history", die_before_history)
    elif point == "all saved, old weights not removed":
        def die_before_cleanup(self, state):
            if state is not None and state["epoch"] == 2:
                raise Killed
        monkeypatch.setattr(rundir.EpochCheckpoint, "_remove_other_weights", die_before_cleanup)


def _without_seconds(history):
    """The history without its clocks (wall and CPU seconds differ from run to run)."""
    return {key: values for key, values in history.items()
            if key not in ("seconds", "cpu_seconds")}


@pytest.mark.parametrize("point, steps", [
    ("mid-epoch", None), ("weights saved, state not", None),
    ("state saved, history row not", None), ("all saved, old weights not removed", None),
    # epochs of N steps, the data streaming across passes
    ("mid-epoch", 3), ("weights saved, state not", 3)])
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_result(
        point, steps, uninterrupted, tiny_mnist, tmp_path):
    expected, expected_logdir = uninterrupted[steps]
    config = RESUMABLE.replace(logdir=str(tmp_path), steps_per_epoch=steps)
    with pytest.MonkeyPatch.context() as patch:
        _kill_at(point, patch)
        with pytest.raises(Killed):
            training.train("2.2", config, arrays=tiny_mnist)

    resumed = training.train("2.2", config, arrays=tiny_mnist)
    assert resumed["test_loss"] == expected["test_loss"]
    assert resumed["test_accuracy"] == expected["test_accuracy"]
    assert resumed["steps"] == expected["steps"]
    history = rundir.read_history(tmp_path / "history.csv")
    assert history["epoch"] == [0, 1, 2], "each epoch once"
    assert _without_seconds(history) == _without_seconds(
        rundir.read_history(expected_logdir / "history.csv"))
    assert sorted(path.name for path in (tmp_path / "backup").iterdir()) == [
        "epoch-0003.weights.h5", rundir.STATE]


def test_a_kill_9_between_the_weights_and_the_state_loses_nothing(uninterrupted, tmp_path):
    """A real SIGKILL, in a process of its own, at the worst point of the epoch's end."""
    expected, _ = uninterrupted[None]
    script = (
        "import os, signal, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from conftest import make_tiny_mnist\n"
        "from tfbn import rundir, training\n"
        "from tfbn.config import RunConfig\n"
        "original = rundir.write_json_atomically\n"
        "def write(path, content):\n"
        "    if path.name == rundir.STATE and content['epoch'] == 2 and sys.argv[3] == 'kill':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    original(path, content)\n"
        "rundir.write_json_atomically = write\n"
        "config = RunConfig(epochs=3, batch_size=16, verbose=0, logdir=sys.argv[1])\n"
        "print(repr(training.train('2.2', config, arrays=make_tiny_mnist())['test_loss']))\n")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-c", script, str(tmp_path), str(ROOT / "tests")]
    killed = subprocess.run([*command, "kill"], capture_output=True, text=True, env=environment)
    assert killed.returncode == -signal.SIGKILL
    assert rundir.read_history(tmp_path / "history.csv")["epoch"] == [0]
    resumed = subprocess.run([*command, "resume"], capture_output=True, text=True,
                             env=environment)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming the run" in resumed.stdout
    assert float(resumed.stdout.strip().splitlines()[-1]) == expected["test_loss"]
    assert rundir.read_history(tmp_path / "history.csv")["epoch"] == [0, 1, 2]


def test_an_unfinished_run_of_keras_backup_and_restore_is_refused(tmp_path):
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / rundir.LEGACY_WEIGHTS).write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"step": "4.1", **QUICK.to_dict()}))
    with pytest.raises(rundir.RunDirectoryError, match="older tfbn.*--restart"):
        rundir.RunDirectory(tmp_path, "4.1", QUICK.to_dict())


def test_the_clock_resumes_from_the_state_even_when_history_csv_lags_it(
        uninterrupted, tiny_mnist, tmp_path):
    """Killed between state.json and history.csv: the resumed run's seconds still count
    the committed epochs (RunClock reads the history through the run directory)."""
    config = RESUMABLE.replace(logdir=str(tmp_path))
    with pytest.MonkeyPatch.context() as patch:
        _kill_at("state saved, history row not", patch)
        with pytest.raises(Killed):
            training.train("2.2", config, arrays=tiny_mnist)
    assert rundir.read_history(tmp_path / "history.csv")["epoch"] == [0]
    opened = rundir.RunDirectory(tmp_path, "2.2", config.to_dict())
    try:
        history = opened.history()
    finally:
        opened.close()
    assert history["epoch"] == [0, 1] and history["seconds"][1] > history["seconds"][0] > 0

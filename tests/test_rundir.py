"""Run directories: one configuration each, never mixed or lost, locked while in use."""

import json
import os
import signal
import subprocess
import sys
import time
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

"""The training loop and the tutorial scripts, on tiny synthetic MNIST-shaped data."""

import difflib
import json
import zipfile
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tfbn import rundir, steps, training
from tfbn.config import RunConfig

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
QUICK = RunConfig(epochs=1, steps_per_epoch=2, batch_size=16, verbose=0)


def test_every_step_has_its_tutorial_script():
    scripts = sorted(path.stem for path in TUTORIALS.glob("step_*.py"))
    assert scripts == sorted(step.script for step in steps.STEPS.values())


@pytest.mark.parametrize("name", list(steps.STEPS))
def test_tfbn_run_imports_the_file_a_learner_reads(name):
    module = steps.load(name)
    assert Path(module.__file__).resolve() == TUTORIALS / f"{steps.get(name).script}.py"
    assert module.STEP == name and module.EPOCHS == (4 if name == "5.0" else 17)


def added_lines(old_script: str, new_script: str) -> list[str]:
    old = (TUTORIALS / f"{old_script}.py").read_text().splitlines()
    new = (TUTORIALS / f"{new_script}.py").read_text().splitlines()
    return [line[1:].strip() for line in difflib.unified_diff(old, new, lineterm="", n=0)
            if line.startswith("+") and not line.startswith("+++")]


def test_the_diff_from_3_1_to_4_2_is_batch_norm():
    added = added_lines(steps.get("3.1").script, steps.get("4.2").script)
    code = [line for line in added if not line.startswith("#")]
    assert sum("use_bias=False" in line for line in code) == 4
    assert sum(line.startswith("x = BatchNorm(scale=False") for line in code) == 4
    assert "BatchNorm = models.batch_norm_type(bn)" in " ".join(code)
    assert "LEARNING_RATE = DecayToFloor(peak=0.02, floor=0.0001, decay_steps=1600)" in code
    assert len(code) < 25, "only the BN idea, not a rewrite"


def test_the_diff_from_4_2_to_5_0_is_the_schedule():
    added = added_lines(steps.get("4.2").script, steps.get("5.0").script)
    code = [line for line in added if line and not line.startswith("#")]
    assert 'EPOCHS = 4' in code and 'STEP = "5.0"' in code
    assert "schedule = keras.optimizers.schedules.CosineDecayRestarts(" in code
    assert not any("layers." in line or "BatchNorm" in line for line in code), "same network"
    assert len(code) < 16, "only the schedule, not a rewrite"


def test_5_0s_learning_rate_anneals_within_the_first_epoch_and_restarts():
    lesson = steps.load("5.0")
    def schedule_of(optimizer):
        return keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])

    schedule = schedule_of(lesson.make_optimizer(steps_per_epoch=600))
    rate = lambda step: float(schedule(step))
    assert rate(0) == pytest.approx(0.02)
    assert rate(599) < 1e-5 and rate(600) == pytest.approx(0.02, rel=1e-3)  # epoch 2
    assert rate(2399) < 1e-5  # the second cycle ends with epoch 4
    halved = schedule_of(lesson.make_optimizer(learning_rate_scale=0.5, steps_per_epoch=50))
    assert float(halved(0)) == pytest.approx(0.01) and float(halved(50)) == pytest.approx(0.01, rel=1e-3)


def test_the_diff_from_4_0_to_4_1_is_relu_without_scale():
    code = [line for line in added_lines(steps.get("4.0").script, steps.get("4.1").script)
            if not line.startswith("#")]
    assert code == ['STEP = "4.1"',
                    'x = BatchNorm(scale=False, name=f"dense{index}_bn")(x)',
                    'x = layers.Activation("relu", name=f"dense{index}_relu")(x)']


def test_a_wheel_ships_the_lessons_as_tfbn_tutorials(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(TUTORIALS.parent)], check=True,
                   capture_output=True)
    wheel, = tmp_path.glob("tfbn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for step in steps.STEPS.values():
        assert f"tfbn/tutorials/{step.script}.py" in names
    assert "tfbn/tutorials/bn_from_scratch.py" in names


@pytest.mark.parametrize("name", list(steps.STEPS))
def test_tutorial_smoke(name, tiny_mnist):
    module = steps.load(name)
    metrics = module.main(QUICK, datasets=tiny_mnist)
    assert metrics["steps"] == 2 and metrics["epochs"] == 1
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and np.isfinite(metrics["test_loss"])
    assert metrics["bn"] == ("custom" if steps.get(name).uses_bn else "none")


def test_a_run_directory_holds_what_the_run_left(tiny_mnist, tmp_path):
    metrics = training.train("4.1", QUICK.replace(epochs=2, logdir=str(tmp_path)),
                             arrays=tiny_mnist)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert set(written) >= {"test_accuracy", "best_test_accuracy", "test_loss", "epochs",
                            "steps", "seconds", "device", "bn", "versions"}
    commit = written["versions"]["commit"]
    assert commit is None or len(commit.split("+")[0]) == 40
    history = rundir.read_history(tmp_path / "history.csv")
    assert history["epoch"] == [0, 1]
    assert written["best_test_accuracy"] == pytest.approx(
        max(history["val_accuracy"] + [written["test_accuracy"]]))
    assert history["seconds"][1] > history["seconds"][0] > 0
    assert json.loads((tmp_path / "config.json").read_text())["step"] == "4.1"
    assert (tmp_path / "dashboard.png").exists()
    dashboard = json.loads((tmp_path / "dashboard.json").read_text())
    assert [accuracy for _, accuracy in dashboard["full_test_accuracy"]] == pytest.approx(
        history["val_accuracy"])
    assert list((tmp_path / "train").glob("events.out.tfevents.*"))
    assert not list(tmp_path.glob("*.tmp"))


def test_same_seed_same_metrics(tiny_mnist):
    config = QUICK.replace(epochs=2, seed=3)
    first = training.train("4.1", config, arrays=tiny_mnist)
    second = training.train("4.1", config, arrays=tiny_mnist)
    other_seed = training.train("4.1", config.replace(seed=4), arrays=tiny_mnist)
    assert first["test_loss"] == second["test_loss"]
    assert first["test_accuracy"] == second["test_accuracy"]
    assert other_seed["test_loss"] != first["test_loss"]


def test_a_run_learns_the_tiny_task(tiny_mnist):
    metrics = training.train("4.1", QUICK.replace(epochs=4, steps_per_epoch=None),
                             arrays=tiny_mnist)
    assert metrics["test_accuracy"] > 0.5


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_without_losing_finished_epochs(tiny_mnist, tmp_path,
                                                                   monkeypatch):
    config = QUICK.replace(epochs=4, logdir=str(tmp_path))
    original = training.RunClock.on_epoch_begin

    def stop_at_third_epoch(self, epoch, logs=None):
        if epoch == 2:
            raise Interrupt
        return original(self, epoch, logs)

    monkeypatch.setattr(training.RunClock, "on_epoch_begin", stop_at_third_epoch, raising=False)
    with pytest.raises(Interrupt):
        training.train("4.1", config, arrays=tiny_mnist)
    assert not (tmp_path / "metrics.json").exists()
    assert rundir.read_history(tmp_path / "history.csv")["epoch"] == [0, 1]

    monkeypatch.undo()
    metrics = training.train("4.1", config, arrays=tiny_mnist)
    assert rundir.read_history(tmp_path / "history.csv")["epoch"] == [0, 1, 2, 3]
    assert metrics["steps"] == 4 * 2, "the resumed run restarts at epoch 2, not 0"
    assert (tmp_path / "backup").exists(), "kept, so that the finished run is not retrained"


def test_a_logdir_of_another_step_is_refused(tiny_mnist, tmp_path):
    training.train("4.1", QUICK.replace(logdir=str(tmp_path)), arrays=tiny_mnist)
    with pytest.raises(ValueError, match=r"holds a run with other options \(step '4.1' -> '4.0'\)"):
        training.train("4.0", QUICK.replace(logdir=str(tmp_path)), arrays=tiny_mnist)


def test_without_logdir_the_run_says_where_it_would_log(tiny_mnist, capsys):
    training.train("1.0", QUICK, arrays=tiny_mnist)
    output = capsys.readouterr().out
    assert "no --logdir" in output and "--logdir runs/1.0" in output
    assert "test accuracy: 0." in output

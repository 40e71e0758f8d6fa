"""The `tfbn` command line: list, run, experiment, and the errors it gives."""

import json
from pathlib import Path

import pytest

from tfbn import cli, experiments, steps, training


TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def test_cli_run_prints_the_test_accuracy(tiny_mnist, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(training.data, "load_mnist", lambda *args, **kwargs: tiny_mnist)
    code = cli.main(["run", "4.2", "--epochs", "1", "--steps-per-epoch", "1",
                     "--batch-size", "8", "--verbose", "0", "--bn", "keras",
                     "--logdir", str(tmp_path)])
    assert code == 0
    assert "test accuracy: " in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.json").read_text())["bn"] == "keras"


def test_cli_rejects_an_unknown_step(capsys):
    assert cli.main(["run", "9.9"]) == 2
    assert "known steps: 1.0, 2.0, 2.1" in capsys.readouterr().err


def test_cli_rejects_bn_on_a_step_without_it(capsys):
    assert cli.main(["run", "2.0", "--bn", "custom"]) == 2
    assert "step 2.0 has no batch norm" in capsys.readouterr().err


def test_cli_list_names_every_step_and_experiment(capsys):
    assert cli.main(["list"]) == 0
    output = capsys.readouterr().out
    for step in steps.STEPS.values():
        assert step.name in output and step.title in output
        assert f"[{step.module().EPOCHS} epochs" in output  # read from the lesson's source
    for name in experiments.NAMES:
        assert name in output


def test_cli_rejects_an_unknown_experiment(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["experiment", "no_such_experiment"])
    assert exit_info.value.code == 2
    assert "paper_figure" in capsys.readouterr().err


def test_every_experiment_has_options_and_a_tutorial_script():
    for name in experiments.NAMES:
        module = experiments.get(name)
        assert module.TITLE and module.Config().outdir
        arguments = cli.build_parser().parse_args(["experiment", name, "--seed", "7"])
        config = cli.parse_experiment_options(arguments.experiment, module.Config(),
                                              arguments.options)
        assert config.seed == 7 and type(config) is module.Config
    scripts = {path.stem for path in TUTORIALS.glob("experiment_*.py")}
    assert scripts == {f"experiment_{name}" for name in experiments.NAMES}


def test_data_fetch_into_an_unusable_directory_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TFBN_DATA_DIR", str(blocker / "cache"))
    assert cli.main(["data", "fetch"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("tfbn: error: ") and "TFBN_DATA_DIR" in error
    assert len(error.splitlines()) == 1


@pytest.mark.parametrize("argv", [["run", "4.1", "--debug", "--logdir", "{blocker}/run"],
                                  ["--debug", "run", "4.1", "--logdir", "{blocker}/run"],
                                  ["run", "4.1", "--logdir", "{blocker}/run"]])
def test_debug_adds_the_traceback_to_the_one_line_error(argv, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main([part.format(blocker=blocker) for part in argv]) == 2
    error = capsys.readouterr().err.strip()
    assert error.splitlines()[-1].startswith("tfbn: error: cannot create logdir")
    assert ("Traceback" in error) == ("--debug" in argv)
    assert ("RunDirectoryError" in error) == ("--debug" in argv)

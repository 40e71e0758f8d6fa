import argparse

import pytest

from tfbn import cli
from tfbn.config import RunConfig, add_arguments, from_arguments


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_arguments(parser.parse_args(argv))


def test_options_are_generated_from_the_fields():
    config = parse(["--epochs", "3", "--steps-per-epoch", "7", "--batch-size", "32",
                    "--bn", "keras", "--seed", "5", "--mixed-precision", "--xla",
                    "--logdir", "runs/x", "--learning-rate-scale", "2.5"])
    assert config == RunConfig(epochs=3, steps_per_epoch=7, batch_size=32, bn="keras", seed=5,
                               mixed_precision=True, xla=True, logdir="runs/x",
                               learning_rate_scale=2.5)


def test_omitted_options_keep_the_defaults():
    assert parse([]) == RunConfig()


@pytest.mark.parametrize("argv, named", [
    (["--batch-size", "0"], "batch_size"),
    (["--epochs", "-1"], "epochs"),
    (["--learning-rate-scale", "0"], "learning_rate_scale"),
    (["--verbose", "3"], "verbose"),
])
def test_bad_values_name_the_option(argv, named):
    with pytest.raises(ValueError, match=named):
        parse(argv)


@pytest.mark.parametrize("argv", [["--bn", "fast"], ["--batch-size", "many"],
                                  ["--strategy", "tpu"], ["--no-such-option"]])
def test_the_parser_rejects_unknown_or_mistyped_options(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_run_options("4.2", RunConfig(), argv)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert argv[0].lstrip("-") in message or "unrecognized" in message


def test_a_value_of_the_wrong_type_is_rejected_in_python_too():
    with pytest.raises(ValueError, match="epochs must be int"):
        RunConfig(epochs="3")
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        RunConfig(batch_size=True)


def test_tutorial_defaults_are_what_an_omitted_option_means():
    config = cli.parse_run_options("2.0", RunConfig(epochs=2, seed=9), ["--seed", "1"])
    assert (config.epochs, config.seed) == (2, 1)

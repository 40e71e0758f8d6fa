"""The `tfbn` command line: the only place that parses arguments.

    tfbn list                      the codelab steps and the experiments, one line each
    tfbn run STEP [options]        train a step (options: tfbn run --help)
    tfbn experiment NAME [options] run an experiment (options: tfbn experiment NAME --help)
    tfbn data fetch|info           get MNIST into the cache / say what is cached
    tfbn compare RUN_DIR...        overlay runs' curves and tabulate their metrics
    tfbn recalibrate RUN_DIR       recompute a run's BN statistics, test metrics before/after
    tfbn diagnose MODEL.keras      how far a model's BN statistics are from the test data's

A user error (a bad option or file, missing data) is one line on stderr and exit code 2 (1
for missing data or a run stopped by a NaN loss); `--debug` prints its traceback too.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import traceback

from tfbn import config as run_config
from tfbn import experiments, steps


def _debug_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on a user error, print the traceback too")
    return parent


def build_parser() -> argparse.ArgumentParser:
    debug = _debug_option()
    parser = argparse.ArgumentParser(
        prog="tfbn", description="Batch normalization, taught by running it.", parents=[debug])
    commands = _Commands(parser.add_subparsers(dest="command", required=True,
                                               metavar="COMMAND"), debug)

    commands.add_parser("list", help="list the codelab steps and the experiments")

    run = commands.add_parser("run", help="train one codelab step",
                              description="Train one codelab step with model.fit.")
    run.add_argument("step", metavar="STEP", help=f"one of: {', '.join(steps.STEPS)}")
    run_config.add_arguments(run)

    # An experiment's options come from its module (which imports TensorFlow), so they are
    # parsed once the experiment is known: `tfbn experiment NAME --help` lists them.
    experiment = commands.add_parser(
        "experiment", help="run an experiment on a claim about BN",
        description="Run an experiment on a claim about BN; `tfbn experiment NAME --help` "
                    "lists its options.",
        epilog="experiments:\n" + "\n".join(f"  {name:<20} {title}"
                                            for name, title in experiments.TITLES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_argument("experiment", metavar="NAME", choices=experiments.NAMES,
                            help=f"one of: {', '.join(experiments.NAMES)}")
    experiment.add_argument("options", nargs=argparse.REMAINDER,
                            help="the experiment's options")

    data_parser = commands.add_parser("data", help="MNIST: fetch into the cache, or show it")
    data_parser.add_argument("action", choices=("fetch", "info"))
    data_parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    data_parser.add_argument("--force", action="store_true",
                             help="fetch again even when a verified copy is cached")

    recalibrate = commands.add_parser(
        "recalibrate", help="recompute a finished run's BN statistics (PreciseBN)",
        description="Recompute the BN moving statistics of a run's trained model over "
                    "training batches, and print the test metrics before and after.")
    recalibrate.add_argument("run_dir", metavar="RUN_DIR")
    recalibrate.add_argument("--steps", type=int, default=200,
                             help="training batches to average over [200]")

    diagnose = commands.add_parser(
        "diagnose", help="how far a saved model's BN statistics are from MNIST's test data",
        description="For each BN layer of a saved .keras model: the mean shift and variance "
                    "ratio between its moving statistics and the test data's, and the test "
                    "metrics with moving and with recalibrated statistics.")
    diagnose.add_argument("model", metavar="MODEL.keras")
    diagnose.add_argument("--steps", type=int, default=None,
                          help="test batches to use (default: all)")

    compare = commands.add_parser("compare", help="compare finished runs")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--output", default=None,
                         help="figure to write [comparison.png beside the runs: in the "
                              "directory that holds them]")
    compare.add_argument("--allow-mixed-steps", action="store_true",
                         help="compare runs of different steps")
    return parser


class _Commands:
    """Subcommands that all take --debug (before or after their own options)."""

    def __init__(self, subparsers, debug: argparse.ArgumentParser):
        self.subparsers = subparsers
        self.debug = debug

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        return self.subparsers.add_parser(name, parents=[self.debug], **kwargs)


def parse_run_options(step_name: str, defaults: run_config.RunConfig | None = None,
                      argv: list[str] | None = None) -> run_config.RunConfig:
    """The options of `tfbn run`, for a tutorial script run as `python tutorials/<script>.py`.

    In a notebook (Jupyter's kernel has its own command line) the options come from the
    environment variable TFBN_OPTIONS instead, e.g. TFBN_OPTIONS="--epochs 1".
    """
    if argv is None and in_notebook():
        argv = shlex.split(os.environ.get("TFBN_OPTIONS", ""))
    return _parse_options(f"Codelab step {step_name}: {steps.get(step_name).title}.",
                          defaults if defaults is not None else run_config.RunConfig(), argv)


def run_lesson(main, step_name: str, argv: list[str] | None = None) -> None:
    """A lesson script's `__main__`: its options parsed, `main(config)` run, and a user error
    printed as one line with exit code 2, as `tfbn run` does (in a notebook it is raised)."""
    if argv is None and not in_notebook():
        argv = sys.argv[1:]
    debug = argv is not None and "--debug" in argv
    config = parse_run_options(step_name, argv=argv)
    if in_notebook():
        main(config)
        return

    def run() -> int:
        main(config)
        return 0

    code = _guarded(run, debug)
    if code:
        sys.exit(code)


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel, whose command line is not the user's."""
    return "ipykernel" in sys.modules


def parse_experiment_options(name: str, defaults, argv: list[str] | None = None,
                             prog: str | None = None):
    """The options of `tfbn experiment NAME`, for `python tutorials/experiment_<name>.py`."""
    return _parse_options(experiments.TITLES[name], defaults, argv, prog)


def _parse_options(description: str, defaults, argv: list[str] | None,
                   prog: str | None = None):
    """Parses the options of a config dataclass; a bad value exits like argparse does (code 2)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     parents=[_debug_option()])
    run_config.add_arguments(parser, defaults)
    namespace = parser.parse_args(argv)
    try:
        return run_config.from_arguments(namespace, type(defaults))
    except ValueError as error:
        parser.error(str(error))


def list_steps() -> str:
    lines = ["steps (tfbn run STEP):"]
    for step in steps.STEPS.values():
        lines.append(f"  {step.name}  {step.title}  "
                     f"[{step.epochs()} epochs; {step.aim()}]")
    lines.append("experiments (tfbn experiment NAME):")
    for name, title in experiments.TITLES.items():
        lines.append(f"  {name:<20} {title}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    return _guarded(lambda: _dispatch(arguments), getattr(arguments, "debug", False))


def _guarded(command, debug: bool = False) -> int:
    """Runs `command`; a user error becomes one line on stderr and an exit code (with its
    traceback before it when `debug`)."""
    from tfbn.errors import DataDirError, DataUnavailableError, NotANumberError

    def report(prefix: str, error: BaseException, code: int) -> int:
        if debug:
            traceback.print_exception(error)
        print(f"tfbn: {prefix}: {error}", file=sys.stderr)
        return code

    try:
        return command()
    except (ValueError, DataDirError) as error:
        return report("error", error, 2)
    except DataUnavailableError as error:
        return report("error", error, 1)
    except NotANumberError as error:
        return report("stopped", error, 1)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last finished "
              "epoch (needs --logdir)", file=sys.stderr)
        return 130


def _dispatch(arguments: argparse.Namespace) -> int:
    if arguments.command == "list":
        print(list_steps())
        return 0
    if arguments.command == "run":
        from tfbn import training
        training.train(arguments.step, run_config.from_arguments(arguments))
        return 0
    if arguments.command == "experiment":
        module = experiments.get(arguments.experiment)
        config = parse_experiment_options(arguments.experiment, module.Config(),
                                          arguments.options,
                                          prog=f"tfbn experiment {arguments.experiment}")
        module.run(config)
        return 0
    if arguments.command == "data":
        from tfbn import data
        if arguments.action == "fetch":
            print(data.fetch(arguments.dataset, force=arguments.force))
        else:
            print(data.cache_info())
        return 0
    if arguments.command == "diagnose":
        from tfbn.practice import diagnose_saved_model
        print(diagnose_saved_model(arguments.model, arguments.steps))
        return 0
    if arguments.command == "recalibrate":
        from tfbn.practice import describe_recalibration, recalibrate_run
        print(describe_recalibration(recalibrate_run(arguments.run_dir, arguments.steps)))
        return 0
    from tfbn.compare import compare_runs, default_comparison_path
    output = arguments.output or default_comparison_path(arguments.run_dirs)
    print(compare_runs(arguments.run_dirs, output,
                       allow_mixed_steps=arguments.allow_mixed_steps))
    print(f"figure: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

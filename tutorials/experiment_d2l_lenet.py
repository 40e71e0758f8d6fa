"""DOCSTRING_d2l_lenet"""

from tfbn import cli
from tfbn.experiments import d2l_lenet as experiment

CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("d2l_lenet", CONFIG))

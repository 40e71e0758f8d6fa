"""Codelab step 3.1. Bigger convolutions and dropout.

One idea from step 3.0: more filters (6x6x6, 5x5x12 stride 2, 4x4x24 stride 2) and
dropout (rate 0.25) on the dense layer, which the bigger net needs.

Run (from the repository root; --help lists every option):

    python tutorials/step_3_1_convolutional_bigger_dropout.py --logdir runs/3.1
    tfbn run 3.1 --logdir runs/3.1        # the same run

The README's results table gives this step's accuracy and wall time, and the command.
"""

from tfbn import cli, training
from tfbn.config import RunConfig

STEP = "3.1"
CONFIG = RunConfig()


def main(config: RunConfig = CONFIG, datasets=None) -> dict:
    return training.train(STEP, config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_run_options(STEP, CONFIG))

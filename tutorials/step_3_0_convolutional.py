"""Codelab step 3.0. Convolutional network.

One idea from step 2.1: convolutions that keep the 2D structure of the image:
5x5x4 (stride 1), 5x5x8 (stride 2), 4x4x12 (stride 2), then dense 200 and softmax.

Run (from the repository root; --help lists every option):

    python tutorials/step_3_0_convolutional.py --logdir runs/3.0
    tfbn run 3.0 --logdir runs/3.0        # the same run

The README's results table gives this step's accuracy and wall time, and the command.
"""

from tfbn import cli, training
from tfbn.config import RunConfig

STEP = "3.0"
CONFIG = RunConfig()


def main(config: RunConfig = CONFIG, datasets=None) -> dict:
    return training.train(STEP, config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_run_options(STEP, CONFIG))

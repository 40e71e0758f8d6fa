"""Codelab step 4.2. Batch norm on the convolutional network.

One idea from step 3.1: batch norm (offset only, per channel) after every convolution
and the dense layer, no biases before it, the larger net (6x6x24, 5x5x48 stride 2,
4x4x64 stride 2, dense 200 with dropout) and rate 0.0001 + 0.02 e^(-t/1600).

Run (from the repository root; --help lists every option):

    python tutorials/step_4_2_batchnorm_convolutional.py --logdir runs/4.2
    tfbn run 4.2 --logdir runs/4.2        # the same run

Compare the built-in layer on the same run: add --bn keras (or --bn none).

The README's results table gives this step's accuracy and wall time, and the command.
"""

from tfbn import cli, training
from tfbn.config import RunConfig

STEP = "4.2"
CONFIG = RunConfig()


def main(config: RunConfig = CONFIG, datasets=None) -> dict:
    return training.train(STEP, config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_run_options(STEP, CONFIG))

"""Codelab step 2.0. Five dense layers, sigmoid.

One idea from step 1.0: hidden layers of 200, 100, 60 and 30 sigmoid neurons before
the softmax, and the Adam optimiser (rate 0.003) instead of plain gradient descent.

Run (from the repository root; --help lists every option):

    python tutorials/step_2_0_five_layers_sigmoid.py --logdir runs/2.0
    tfbn run 2.0 --logdir runs/2.0        # the same run

The README's results table gives this step's accuracy and wall time, and the command.
"""

from tfbn import cli, training
from tfbn.config import RunConfig

STEP = "2.0"
CONFIG = RunConfig()


def main(config: RunConfig = CONFIG, datasets=None) -> dict:
    return training.train(STEP, config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_run_options(STEP, CONFIG))

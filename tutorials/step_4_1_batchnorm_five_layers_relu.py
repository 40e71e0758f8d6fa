"""Codelab step 4.1. Batch norm before each ReLU.

One idea from step 4.0: ReLU instead of sigmoid, so BN keeps only its offset (beta):
ReLU is scale invariant and the next layer's weights absorb any scale.

Run (from the repository root; --help lists every option):

    python tutorials/step_4_1_batchnorm_five_layers_relu.py --logdir runs/4.1
    tfbn run 4.1 --logdir runs/4.1        # the same run

Compare the built-in layer on the same run: add --bn keras (or --bn none).

The README's results table gives this step's accuracy and wall time, and the command.
"""

from tfbn import cli, training
from tfbn.config import RunConfig

STEP = "4.1"
CONFIG = RunConfig()


def main(config: RunConfig = CONFIG, datasets=None) -> dict:
    return training.train(STEP, config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_run_options(STEP, CONFIG))

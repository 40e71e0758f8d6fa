"""Codelab step 4.0. Batch norm before each sigmoid.

One idea from step 2.0: batch normalization between each weighted sum and its
sigmoid (with scale and offset: the sigmoid is not scale invariant), the layer's bias
dropped because BN's offset replaces it, and a ten times higher learning rate
(0.0001 + 0.03 e^(-t/1000)) that BN makes possible.

Run (from the repository root; --help lists every option):

    python tutorials/step_4_0_batchnorm_five_layers_sigmoid.py --logdir runs/4.0
    tfbn run 4.0 --logdir runs/4.0        # the same run

Compare the built-in layer on the same run: add --bn keras (or --bn none).

The README's results table gives this step's accuracy and wall time, and the command.
"""

from tfbn import cli, training
from tfbn.config import RunConfig

STEP = "4.0"
CONFIG = RunConfig()


def main(config: RunConfig = CONFIG, datasets=None) -> dict:
    return training.train(STEP, config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_run_options(STEP, CONFIG))

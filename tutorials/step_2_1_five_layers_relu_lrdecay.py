"""Codelab step 2.1. ReLU and learning-rate decay.

One idea from step 2.0 (well, two, as in the codelab): ReLU instead of sigmoid, which
does not saturate, and a learning rate decaying from 0.003 to 0.0001
(0.0001 + 0.003 e^(-t/2000)) that calms the noisy accuracy curve late in training.

Run (from the repository root; --help lists every option):

    python tutorials/step_2_1_five_layers_relu_lrdecay.py --logdir runs/2.1
    tfbn run 2.1 --logdir runs/2.1        # the same run

The README's results table gives this step's accuracy and wall time, and the command.
"""

from tfbn import cli, training
from tfbn.config import RunConfig

STEP = "2.1"
CONFIG = RunConfig()


def main(config: RunConfig = CONFIG, datasets=None) -> dict:
    return training.train(STEP, config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_run_options(STEP, CONFIG))

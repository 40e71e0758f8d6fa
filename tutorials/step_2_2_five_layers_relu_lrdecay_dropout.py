"""Codelab step 2.2. Dropout.

One idea from step 2.1: dropout (keep 0.75, i.e. rate 0.25) after each hidden layer,
to narrow the gap between training and test loss.

Run (from the repository root; --help lists every option):

    python tutorials/step_2_2_five_layers_relu_lrdecay_dropout.py --logdir runs/2.2
    tfbn run 2.2 --logdir runs/2.2        # the same run

The README's results table gives this step's accuracy and wall time, and the command.
"""

from tfbn import cli, training
from tfbn.config import RunConfig

STEP = "2.2"
CONFIG = RunConfig()


def main(config: RunConfig = CONFIG, datasets=None) -> dict:
    return training.train(STEP, config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_run_options(STEP, CONFIG))

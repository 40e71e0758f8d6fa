"""Codelab step 1.0. Softmax regression: one dense layer from 784 pixels to 10 classes.

The simplest classifier: each digit class is a weighted sum of the pixels, squashed
by a softmax into probabilities, trained by plain gradient descent on the cross-entropy.
(The codelab sums the loss over a batch of 100 with rate 0.005; Keras averages, so the
same update takes rate 0.5.)

Run (from the repository root; --help lists every option):

    python tutorials/step_1_0_softmax.py --logdir runs/1.0
    tfbn run 1.0 --logdir runs/1.0        # the same run

The README's results table gives this step's accuracy and wall time, and the command.
"""

from tfbn import cli, training
from tfbn.config import RunConfig

STEP = "1.0"
CONFIG = RunConfig()


def main(config: RunConfig = CONFIG, datasets=None) -> dict:
    return training.train(STEP, config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_run_options(STEP, CONFIG))

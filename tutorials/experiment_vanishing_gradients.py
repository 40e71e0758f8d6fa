"""Experiment: does batch norm cure the vanishing gradients of a deep sigmoid network?

The claim: each sigmoid multiplies the gradient by at most 1/4 on its way down, so the
first layers of a deep sigmoid net barely learn; BN before each sigmoid keeps its inputs
in the steep middle and the gradient reaches the first layers. The experiment trains the
codelab's five-layer sigmoid net with the layers of step 2.0 (no BN) and of step 4.0 (BN
before each sigmoid), both with plain SGD at 1.0 (a rate where the net without BN trains
too, so that the accuracy gap is not a bad rate's), and measures the L2 norm of the
gradient of each layer's weight matrix at initialisation and every 100 steps, on 1,000
fixed training images. For a seed, both networks start from the same kernels and see the
same batches; 3 seeds, mean ± sd and every seed's value.
tfbn.experiments.vanishing_gradients documents the details and the choice of the rate.

Run (from the repository root; --help lists every option):

    python tutorials/experiment_vanishing_gradients.py   # about 5 minutes on 2 shared CPU cores
    tfbn experiment vanishing_gradients                   # the same run
    tfbn experiment vanishing_gradients --learning-rate 0.1   # the old rate
    tfbn experiment vanishing_gradients --steps 10000 --record-every 250   # the codelab's length

Result (one seed, before issue 12: SGD 0.1, 3,000 steps of batch 100, MNIST, seed 0): at
initialisation the gradient norms from the first layer to the last are 0.0095, 0.040,
0.11, 0.38, 0.70 without BN (the first layer's is 74 times smaller than the last's,
although its matrix has 523 times as many entries) and 0.65, 0.37, 0.27, 0.23, 0.80 with
BN. Without BN the first two layers' norms stay below 0.01 for the first 1,500 steps and
the test accuracy stays at 10-13% (chance) for most of them, 50.2% after 3,000 steps; with
BN it is 92.7% after 1,000 steps and 96.2% after 3,000. docs/experiments.md has the figure.
"""

from tfbn import cli
from tfbn.experiments import vanishing_gradients as experiment

CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("vanishing_gradients", CONFIG))

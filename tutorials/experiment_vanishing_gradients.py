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

    python tutorials/experiment_vanishing_gradients.py   # 2 minutes on 2 CPU cores
    tfbn experiment vanishing_gradients                   # the same run
    tfbn experiment vanishing_gradients --learning-rate 0.1   # the old rate
    tfbn experiment vanishing_gradients --steps 10000 --record-every 250   # the codelab's length

Result (SGD 1.0, 3,000 steps of batch 100, MNIST, seeds 0-2, mean ± sd): at
initialisation the first layer's gradient norm is 0.018 ± 0.006 of the last's without BN
(0.0091 against 0.54, although its matrix has 523 times as many entries) and 1.37 ± 0.58
of it with BN. Without BN the first layers' norms stay near 0.005-0.01 and the test
accuracy at chance for the first 200 steps; it is 62.69 ± 10.12% after 500 steps against
91.60 ± 0.44% with BN, and 95.49 ± 0.45% against 96.49 ± 0.48% after 3,000: a slow start
and a point at the end. At the old rate, SGD 0.1, the plain net is at chance for 1,000
steps and ends at 57.45 ± 7.94% (BN 95.99 ± 0.27%): that gap is mostly the rate.
docs/experiments.md has the figure.
"""

from tfbn import cli
from tfbn.experiments import vanishing_gradients as experiment

CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("vanishing_gradients", CONFIG))

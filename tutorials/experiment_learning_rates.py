"""Experiment: does batch norm allow much higher learning rates?

The claim (Ioffe & Szegedy 2015, section 3.3; the codelab's step 4.0 raises its rate
tenfold): with BN, a high learning rate neither blows the activations up nor pins the
sigmoids at 0 or 1. The experiment trains the codelab's five-layer sigmoid net with the
layers of step 2.0 (no BN) and of step 4.0 (BN before each sigmoid), both with Adam at six
constant rates from 0.001 to 0.3 (not the steps' own optimizers and schedules), and
compares the test accuracy after 1,200 steps. For a seed, every run starts from the same
kernels and sees the same batches; 3 seeds, mean ± sd and every seed's value.
tfbn.experiments.learning_rates documents the details.

Run (from the repository root; --help lists every option):

    python tutorials/experiment_learning_rates.py   # 7 minutes on 2 CPU cores
    tfbn experiment learning_rates                   # the same run
    tfbn experiment learning_rates --optimizer sgd --learning-rates 0.03,0.1,0.3,1,3,10

Result (1,200 steps of batch 100, MNIST, seeds 0-2, mean ± sd), test accuracy at Adam
rates 0.001 / 0.003 / 0.01 / 0.03 / 0.1 / 0.3: without BN 93.87 / 96.23 / 96.14 / 71.26 /
10.30 / 9.92% (at 0.03 one seed fails, two train), with BN 94.26 / 94.36 / 94.48 / 95.33 /
95.01 / 92.44%. Without BN the net fails from 0.1 up (its loss stays at chance, 2.3-2.5;
nothing becomes NaN); with BN every rate up to 0.3, 30 times the plain net's best, trains
to 92-96% in every seed. At the low rates where both train, BN gives no gain here. With
SGD, BN trains at every rate from 0.03 to 10 (91.00-95.01%), the plain net only at 0.3-3.
docs/experiments.md has the figure.
"""

from tfbn import cli
from tfbn.experiments import learning_rates as experiment

CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("learning_rates", CONFIG))

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

    python tutorials/experiment_learning_rates.py   # about 19 minutes on 2 shared CPU cores
    tfbn experiment learning_rates                   # the same run
    tfbn experiment learning_rates --optimizer sgd --learning-rates 0.03,0.1,0.3,1,3,10

Result (one seed, before issue 12: 1,200 steps of batch 100, MNIST, seed 0), test
accuracy at rates 0.001 / 0.003 / 0.01 / 0.03 / 0.1 / 0.3: without BN 93.3 / 96.1 / 96.3 /
29.8 / 11.4 / 9.7%, with BN 95.1 / 95.8 / 94.9 / 95.8 / 95.7 / 93.4%. Without BN the net
fails from 0.03 up (its loss stalls at 1.45, then at chance, 2.33; nothing becomes NaN);
with BN every rate up to 0.3, 30 times the plain net's best, trains to 93-96%. At the low
rates where both train, BN gives no gain here. docs/experiments.md has the figure.
"""

from tfbn import cli
from tfbn.experiments import learning_rates as experiment

CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("learning_rates", CONFIG))

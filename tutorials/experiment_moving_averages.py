"""Experiment: why batch norm predicts with moving averages, and how good they are.

The claims: a BN network cannot normalize a test example with the statistics of its own
batch (a batch of one has no spread), so it predicts with moving averages of the training
batches' statistics; those averages lag behind the true population statistics, and after
a short run a plain average with momentum 0.99 still remembers its initial 0 and 1, where
a debiased one or momentum 0.9 has caught up. The experiment trains the step 4.0 network
(BN before five sigmoids) three times with the same weights and batches, the BN layers'
averages being momentum 0.99, 0.99 debiased (tfbn.BatchNorm(debiased=True)) and 0.9, for
each of 3 seeds, and records the averages of one BN layer against the population
statistics of its input, the test accuracy with each, and, at the end, the accuracy when
every test batch of 1 to 1,000 images is normalized with its own statistics; the figure
and metrics.json give the mean ± sd over the seeds and every seed's numbers.
tfbn.experiments.moving_averages documents the details.

Run (from the repository root; --help lists every option):

    python tutorials/experiment_moving_averages.py   # about 16 minutes on 2 shared CPU cores
    tfbn experiment moving_averages                   # the same run
    tfbn experiment moving_averages --steps 6000 --record-every 100   # a longer run

Result of the default run (one seed, before issue 12; 1,000 steps of batch 100, MNIST,
seed 0). The three runs train identical weights (final training loss 0.1019 in each).
Test accuracy with the moving statistics after 25 / 50 / 100 / 200 / 1,000 steps:
momentum 0.99 62.3 / 67.8 / 82.8 / 88.4 / 96.75%, debiased 81.7 / 87.3 / 86.8 / 90.8 /
96.76%, momentum 0.9 80.7 / 86.7 / 86.8 / 91.4 / 96.99%; normalizing with the whole test
set's statistics instead gives 82.3 / 87.5 / 88.5 / 92.0 / 96.96%. In BN layer 4 the
plain 0.99 average is 0.34 standard deviations off the population mean after 100 steps
(debiased 0.06, momentum 0.9 0.06), and 0.03 after 1,000 (0.9: 0.014). Predicting with
batch statistics after 1,000 steps: 10.1% on batches of one (every image gets the same
class), 74.9% on batches of 4, 93.4% of 16, 96.2% of 64, 96.75% of 256, the same as with
the moving statistics. docs/experiments.md has the figure.
"""

from tfbn import cli
from tfbn.experiments import moving_averages as experiment

CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("moving_averages", CONFIG))

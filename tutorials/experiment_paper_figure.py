"""Experiment: the BN paper's MNIST figure (Ioffe & Szegedy 2015, Figure 1).

The claim: with batch norm the network trains faster and reaches a higher accuracy, and
the input of each sigmoid keeps a stable distribution while the layers below it learn.
The paper explains the first by the second (BN removes "internal covariate shift"); that
is its hypothesis, which this figure shows side by side with the speed-up but does not
test (Santurkar et al. 2018 made the inputs shift more than without BN, and the network
still trained like a BN network). The experiment trains the paper's network (3 fully
connected hidden layers of 100 sigmoids, batch 60, SGD 0.1) with and without BN before
each sigmoid, both from the same kernels and batches, for 3 seeds, and draws the paper's
three panels: test accuracy over the steps (mean ± sd over the seeds), and the 15th, 50th
and 85th percentiles of the input of one sigmoid of the last hidden layer, without BN
and with it (the first seed; the other seeds' medians in grey).
tfbn.experiments.paper_figure documents the details.

Run (from the repository root; --help lists every option):

    python tutorials/experiment_paper_figure.py   # 4 minutes on 2 CPU cores
    tfbn experiment paper_figure                   # the same run
    tfbn experiment paper_figure --steps 50000 --record-every 1000   # the paper's length

Result of the default run (10,000 steps, MNIST, seeds 0-2, mean ± sd): test accuracy
96.89 ± 0.24% with BN, 94.88 ± 0.18% without; with BN 86.09 ± 2.17% after 250 steps and
91.12 ± 0.23% after 500, where the network without BN is still at chance (20.02 ± 5.05%,
16.19 ± 8.23%) and needs 4,250 steps to pass 90% in every seed. Without BN the median
input of sigmoid 0 (seed 0: from -0.53 up to +0.23, down to -0.72) wanders over 0.86 ±
0.08 and its 15th-85th percentile spread grows from 0.04 to 2.32; with BN the median
moves over 0.27 ± 0.04. docs/experiments.md has the figure.
"""

from tfbn import cli
from tfbn.experiments import paper_figure as experiment

CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("paper_figure", CONFIG))

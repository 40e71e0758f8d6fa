"""Experiment: cross-check with d2l.ai's batch-norm LeNet on Fashion-MNIST.

Dive into Deep Learning puts BN before every sigmoid of LeNet and reports test accuracy
0.883 (its from-scratch layer) and 0.884 (the built-in one) after 10 epochs of SGD at rate
1.0, batch 256, against 0.811 for LeNet without BN (rate 0.9). The experiment rebuilds the
three networks layer for layer (tfbn.BatchNorm with d2l's momentum 0.9 and epsilon 1e-5
for the from-scratch one) and trains them the same way, for 3 seeds, each network of a
seed from the same kernels and data order.
tfbn.experiments.d2l_lenet documents the details.

Run (from the repository root; --help lists every option):

    python tutorials/experiment_d2l_lenet.py     # 3 epochs, 3 seeds, 5 min 38 s
    tfbn experiment d2l_lenet                    # the same run
    tfbn experiment d2l_lenet --epochs 10        # d2l's setting, 18 minutes

Result of d2l's setting (seeds 0-2, mean ± sd): with their moving statistics the BN nets
end at 83.30 ± 3.31% (from scratch) and 83.24 ± 3.01% (built in), swinging up to 21
points between epochs; the same weights with statistics recalibrated over 50 training
batches end at 87.96 ± 0.64% and 88.33 ± 0.74%, d2l's 0.883 and 0.884 (its TensorFlow
tab, v0.17.5). LeNet without BN: 80.89 ± 1.73% (d2l 0.811). At rate 1.0 the moving
averages lag the weights; training matches d2l's. With d2l's TensorFlow pipeline (the
same batches every epoch, `--pipeline fixed_batches`) the moving statistics alone reach
88.93 ± 0.38% and 87.18 ± 1.43%. docs/experiments.md has the figure.
"""

from tfbn import cli
from tfbn.experiments import d2l_lenet as experiment

CONFIG = experiment.Config()


def main(config: experiment.Config = CONFIG, datasets=None) -> dict:
    return experiment.run(config, arrays=datasets)


if __name__ == "__main__":
    main(cli.parse_experiment_options("d2l_lenet", CONFIG))

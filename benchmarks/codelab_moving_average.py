"""Keras's moving average against the codelab's, on a BN step's full run, several seeds.

The lessons keep BN's moving statistics the Keras way, `momentum=0.99`. The codelab keeps
them with TF1's `ExponentialMovingAverage`, decay 0.998 (steps 4.0, 4.1) or 0.999 (4.2),
debiased by the iteration count, which is `tfbn.BatchNorm(momentum=..., debiased=True)`.
This trains the step both ways, with the same seeds, and prints the test accuracies:

    python benchmarks/codelab_moving_average.py --step 4.1 --seeds 0 1 2   # ~20 min, 2 cores

Each run is `tfbn run STEP --seed S` with the step's own script; the codelab variant
swaps its BN layer class for `functools.partial(tfbn.BatchNorm, momentum=..., debiased=True)`.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from unittest import mock

from tfbn import BatchNorm, models, training
from tfbn.config import RunConfig

CODELAB_DECAY = {"4.0": 0.998, "4.1": 0.998, "4.2": 0.999}
TEST_SET_SIZE = 10_000


def run(step: str, seed: int, codelab: bool, epochs: int | None = None,
        steps_per_epoch: int | None = None, arrays=None) -> dict:
    config = RunConfig(seed=seed, epochs=epochs, steps_per_epoch=steps_per_epoch, bn="custom",
                       verbose=0)
    if not codelab:
        return training.train(step, config, arrays)
    layer = functools.partial(BatchNorm, momentum=CODELAB_DECAY[step], debiased=True)
    with mock.patch.object(models, "batch_norm_type", lambda bn: layer):
        return training.train(step, config, arrays)


def summary(accuracies: list[float]) -> str:
    mean = statistics.mean(accuracies)
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else float("nan")
    return f"{100 * mean:.2f} ± {100 * spread:.2f}%"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", default="4.1", choices=sorted(CODELAB_DECAY))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the step's")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="default: the whole training set")
    parser.add_argument("--json", help="write every run's metrics here")
    arguments = parser.parse_args(argv)

    results = {"keras momentum 0.99": [], f"codelab {CODELAB_DECAY[arguments.step]}, debiased": []}
    for seed in arguments.seeds:
        for codelab, name in enumerate(results):
            metrics = run(arguments.step, seed, bool(codelab), arguments.epochs,
                          arguments.steps_per_epoch)
            results[name].append(metrics)
            print(f"seed {seed}, {name}: final {metrics['test_accuracy']:.4f}, "
                  f"best epoch {metrics['best_test_accuracy']:.4f}", flush=True)
    print(f"\nstep {arguments.step}, seeds {arguments.seeds}, mean ± sd over the seeds:")
    for name, runs in results.items():
        print(f"  {name:<26} final {summary([m['test_accuracy'] for m in runs])}, "
              f"best epoch {summary([m['best_test_accuracy'] for m in runs])}")
    accuracy = statistics.mean(m["test_accuracy"] for runs in results.values() for m in runs)
    noise = (accuracy * (1 - accuracy) / TEST_SET_SIZE) ** 0.5
    print(f"  the test set's own noise floor at {100 * accuracy:.1f}%: ± {100 * noise:.2f} "
          f"points (binomial standard error over {TEST_SET_SIZE:,} digits)")
    if arguments.json:
        with open(arguments.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return results


if __name__ == "__main__":
    main()

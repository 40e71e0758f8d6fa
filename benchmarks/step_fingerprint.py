"""Exact losses of short runs of every step and --bn choice: does a change move the numbers?

    python benchmarks/step_fingerprint.py before.json      # on the old code
    python benchmarks/step_fingerprint.py after.json       # on the new code
    diff before.json after.json                            # empty: the change moves nothing

Each run is 2 epochs of 15 steps on real MNIST, seed 0 (about 3 minutes for all 15 runs on
2 cores). Runs are deterministic on one machine and code (`enable_op_determinism`), so
equal files mean the change leaves training unchanged to the last digit there.
"""

import json
import sys

from tfbn import steps, training
from tfbn.config import RunConfig


def fingerprint() -> dict:
    results = {}
    for name, step in steps.STEPS.items():
        for bn in (["custom", "keras", "none"] if step.uses_bn else ["none"]):
            metrics = training.train(name, RunConfig(epochs=2, steps_per_epoch=15, verbose=0,
                                                     bn=bn))
            results[f"{name}/{bn}"] = [metrics["test_loss"], metrics["test_accuracy"]]
            print(name, bn, repr(metrics["test_loss"]), metrics["test_accuracy"], flush=True)
    return results


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/step_fingerprint.py OUTPUT.json")
    with open(sys.argv[1], "w") as handle:
        json.dump(fingerprint(), handle, indent=1)

"""What `tf.config.experimental.enable_op_determinism()` costs: step 4.2's training step
with it and without it, in interleaved processes, and whether the results differ.

Every lesson run enables it (`tfbn.training.Run`), so that a seed gives the same numbers
bit for bit on the same code, machine and thread count. The switch is process-wide and
read when kernels are built, so each timing runs in a process of its own; the two settings
alternate, round after round, and the ratio is the median of the per-round ratios:

    python benchmarks/determinism.py --rounds 5        # about 3 min on 2 cores

Each process builds 4.2's model from its lesson (`tfbn.BatchNorm`), compiles it as the
lesson does, and trains `--steps` batches of real MNIST (after 10 warm-up batches) with
`train_on_batch`; it prints the steps per second (wall and per CPU second of the process)
and the final loss, to show whether the two settings compute the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WARM_UP = 10


def child(deterministic: bool, steps: int, batch_size: int) -> dict:
    import keras
    import tensorflow as tf

    from tfbn import data
    from tfbn import steps as registry

    keras.utils.set_random_seed(0)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    lesson = registry.load("4.2")
    model = lesson.build_model("custom")
    model.compile(optimizer=lesson.make_optimizer(), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    train, _ = data.mnist_datasets(batch_size, order=data.EpochOrder(0))
    batches = iter(train)
    for _ in range(WARM_UP):
        model.train_on_batch(*next(batches))
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = model.train_on_batch(*next(batches), return_dict=True)["loss"]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"steps_per_second": steps / wall, "steps_per_cpu_second": steps / cpu,
            "loss": float(loss)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--json", default=None, help="write every round's numbers here")
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.child:
        print(json.dumps(child(arguments.child == "on", arguments.steps, arguments.batch_size)))
        return 0

    print(f"load average at the start: {os.getloadavg()}")
    rounds = []
    for index in range(arguments.rounds):
        result = {}
        order = ("on", "off") if index % 2 == 0 else ("off", "on")
        for setting in order:
            output = subprocess.run(
                [sys.executable, __file__, "--child", setting, "--steps", str(arguments.steps),
                 "--batch-size", str(arguments.batch_size)],
                capture_output=True, text=True, check=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            result[setting] = json.loads(output.stdout.strip().splitlines()[-1])
        rounds.append(result)
        print(f"round {index + 1}: "
              + "; ".join(f"{setting}: {result[setting]['steps_per_second']:.2f} steps/s, "
                          f"{result[setting]['steps_per_cpu_second']:.2f} steps/CPU-s, "
                          f"loss {result[setting]['loss']:.9g}" for setting in ("on", "off")),
              flush=True)
    print(f"load average at the end: {os.getloadavg()}")
    for clock in ("steps_per_second", "steps_per_cpu_second"):
        ratios = [r["on"][clock] / r["off"][clock] for r in rounds]
        print(f"{clock.replace('_', ' ')}: deterministic / default = "
              f"{statistics.median(ratios):.3f} (median of {len(ratios)} rounds; range "
              f"{min(ratios):.3f}-{max(ratios):.3f})")
    same = all(r["on"]["loss"] == r["off"]["loss"] for r in rounds)
    repeatable = len({r[s]["loss"] for r in rounds for s in ("on",)}) == 1
    print(f"final loss the same with and without: {same}; the same in every deterministic "
          f"process: {repeatable}")
    if arguments.json:
        with open(arguments.json, "w") as handle:
            json.dump({"rounds": rounds, "load_average_end": os.getloadavg()}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a `tfbn run` spends its time outside the training step: step 4.2, four ways, each
in its own process, interleaved round after round.

- `step`: `model.fit` on the lesson's pipeline (`data.EpochOrder`), no validation, no
  callbacks: the training step and the input pipeline alone;
- `evaluation`: the same plus the per-epoch evaluation of the 10,000 test digits;
- `run`: what `tfbn run 4.2` does without `--logdir` (`training.Run`'s callbacks: the clock,
  the NaN stop, the epoch seeds);
- `logdir`: `tfbn run 4.2 --logdir DIR`: TensorBoard (histograms before and after BN,
  misclassified digits), the codelab's dashboard (its evaluations every 100 batches) and
  the epoch checkpoint.

Each process trains `--epochs` epochs of `--steps-per-epoch` batches of 100 and times the
epochs after the first (which traces the graphs): from one epoch's end to the next, the
callbacks' epoch-end work included. Images per second and per CPU second, median of the
rounds; each variant's share is its time over the `step` variant's, per round.

    python benchmarks/run_overhead.py --rounds 2          # about 8 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

VARIANTS = ("step", "evaluation", "run", "logdir")
BATCH_SIZE = 100


def child(variant: str, steps_per_epoch: int, epochs: int) -> dict:
    import keras

    from tfbn import data, steps, training
    from tfbn.config import RunConfig

    class EpochClock(keras.callbacks.Callback):
        """Wall and CPU time from one epoch's end to the next (put last: the other
        callbacks' epoch-end work counts)."""

        def __init__(self):
            super().__init__()
            self.ends = []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append((time.perf_counter(), time.process_time()))

    lesson = steps.load("4.2")
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as logdir:
        config = RunConfig(epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0,
                           logdir=logdir if variant == "logdir" else None)
        with training.Run("4.2", config) as run:
            train, test = data.mnist_datasets(BATCH_SIZE, order=run.order, arrays=run.arrays)
            model = lesson.build_model(run.bn)
            model.compile(optimizer=lesson.make_optimizer(),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            callbacks = run.callbacks(model) if variant in ("run", "logdir") else []
            model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0,
                      validation_data=None if variant == "step" else test,
                      callbacks=[*callbacks, clock])
    walls = [b[0] - a[0] for a, b in zip(clock.ends, clock.ends[1:])]
    cpus = [b[1] - a[1] for a, b in zip(clock.ends, clock.ends[1:])]
    images = steps_per_epoch * BATCH_SIZE
    return {"images_per_second": images / statistics.median(walls),
            "images_per_cpu_second": images / statistics.median(cpus)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=2, help="the first is not timed")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", default=None, help="write every round's numbers here")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is not timed")
    if options.child:
        print(json.dumps(child(options.child, options.steps_per_epoch, options.epochs)))
        return 0
    print(f"load average at the start: {os.getloadavg()}", flush=True)
    rounds = []
    for index in range(options.rounds):
        order = options.variants if index % 2 == 0 else options.variants[::-1]
        result = {}
        for variant in order:
            output = subprocess.run(
                [sys.executable, __file__, "--child", variant, "--steps-per-epoch",
                 str(options.steps_per_epoch), "--epochs", str(options.epochs)],
                capture_output=True, text=True, check=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            result[variant] = json.loads(output.stdout.strip().splitlines()[-1])
        rounds.append(result)
        print(f"round {index + 1}: " + "; ".join(
            f"{variant} {result[variant]['images_per_second']:.0f} img/s" for variant in
            options.variants), flush=True)
    print(f"load average at the end: {os.getloadavg()}")
    print(table(rounds, options.variants))
    if options.json:
        with open(options.json, "w") as handle:
            json.dump({"rounds": rounds, "steps_per_epoch": options.steps_per_epoch}, handle,
                      indent=2)
    return 0


def table(rounds: list[dict], variants: list[str]) -> str:
    """Median images/s (wall and CPU) and time relative to `step`, per variant."""
    lines = ["| variant | images/s | images/CPU-s | time / step's (range) |",
             "| --- | --- | --- | --- |"]
    for variant in variants:
        relative = [r["step"]["images_per_second"] / r[variant]["images_per_second"]
                    for r in rounds] if "step" in variants else [float("nan")]
        lines.append(
            f"| {variant} | {statistics.median(r[variant]['images_per_second'] for r in rounds):.0f}"
            f" | {statistics.median(r[variant]['images_per_cpu_second'] for r in rounds):.0f}"
            f" | {statistics.median(relative):.2f} ({min(relative):.2f}-{max(relative):.2f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

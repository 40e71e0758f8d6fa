"""Time to accuracy: the epochs and CPU seconds a run takes until its test accuracy first
reaches 98.5, 99.0, 99.3 and 99.5%, median of 3 seeds, for

- step 4.2 with the codelab's schedule (stopped once it reaches 99.5%, `--stop-at`, or
  after 12 epochs);
- step 5.0 (one-cycle) with `tfbn.BatchNorm`, with Keras's built-in layer, and without BN.

Each run is the command a user types, `tfbn run STEP ... --seed K --logdir OUT/NAME-seedK
--verbose 2`, in its own process, one after another (two trainings at once would halve
each other's speed). The clock is the run's own: `history.csv`'s `cpu_seconds` and
`seconds` after each epoch, so the per-epoch test evaluation, the dashboard and TensorBoard
count, as they do for a user. A benchmark killed and started again resumes its runs: a
finished run directory is read, not trained again.

    python benchmarks/time_to_accuracy.py                  # about 45 min on 2 cores
    python benchmarks/time_to_accuracy.py --runs "5.0" "5.0 no BN" --seeds 0
    python benchmarks/time_to_accuracy.py --summarize-only  # the table from OUT's runs

It writes OUT/summary.md (the table) and OUT/summary.json (every seed's numbers).
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from pathlib import Path

from tfbn import rundir
from tfbn.files import write_json_atomically, write_text_atomically

THRESHOLDS = (0.985, 0.990, 0.993, 0.995)
# The 5.0 recipe without BN: its learning rate, scaled by this, is the best of the
# no-BN sweep (benchmarks/README.md, "Step 5.0 without batch norm").
NO_BN_LEARNING_RATE_SCALE = 0.2
RUNS = {
    # The codelab's schedule decays by step, not epoch: stopping early changes nothing before.
    "4.2": ["4.2", "--epochs", "12", "--stop-at", "0.995"],
    "5.0": ["5.0"],
    "5.0 keras": ["5.0", "--bn", "keras"],
    "5.0 no BN": ["5.0", "--bn", "none", "--learning-rate-scale", str(NO_BN_LEARNING_RATE_SCALE)],
}
NOT_REACHED = math.inf


def directory_name(run: str, seed: int) -> str:
    return f"{run.replace(' ', '-')}-seed{seed}"


def command(run: str, seed: int, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "tfbn.cli", "run", *RUNS[run], "--seed", str(seed),
            "--logdir", str(out / directory_name(run, seed)), "--verbose", "2", *extra]


def first_reached(history: dict, threshold: float) -> dict:
    """The first epoch whose test accuracy reaches `threshold`, with the run's CPU and wall
    seconds at its end; infinite when the run never reaches it."""
    for index, accuracy in enumerate(history["val_accuracy"]):
        if accuracy >= threshold:
            return {"epochs": index + 1, "cpu_seconds": history["cpu_seconds"][index],
                    "seconds": history["seconds"][index]}
    return {"epochs": NOT_REACHED, "cpu_seconds": NOT_REACHED, "seconds": NOT_REACHED}


def summarize_run(history: dict) -> dict:
    return {"test_accuracy": history["val_accuracy"],
            "reached": {f"{threshold:.3f}": first_reached(history, threshold)
                        for threshold in THRESHOLDS}}


def summarize(out: Path, runs: list[str], seeds: list[int]) -> dict:
    """Every run's per-seed numbers and their medians over the seeds (a run that never
    reached a threshold counts as infinite, so the median says whether most seeds did)."""
    summary = {}
    for run in runs:
        per_seed = {}
        for seed in seeds:
            history = rundir.read_history(out / directory_name(run, seed) / rundir.HISTORY)
            if history:
                per_seed[seed] = summarize_run(history)
        if not per_seed:
            continue
        medians = {}
        for threshold in THRESHOLDS:
            key = f"{threshold:.3f}"
            medians[key] = {measure: statistics.median(
                                seed_summary["reached"][key][measure]
                                for seed_summary in per_seed.values())
                            for measure in ("epochs", "cpu_seconds", "seconds")}
        summary[run] = {"seeds": per_seed, "median": medians}
    return summary


def _cell(reached: dict) -> str:
    if math.isinf(reached["epochs"]):
        return "not reached"
    return f"{reached['epochs']:g} ({reached['cpu_seconds']:.0f} CPU s, {reached['seconds']:.0f} s)"


def markdown(summary: dict) -> str:
    header = ["run", "seeds", *(f"{threshold:.1%}" for threshold in THRESHOLDS),
              "test accuracy after each epoch, per seed"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run, result in summary.items():
        accuracies = "; ".join(
            f"{seed}: " + " ".join(f"{100 * accuracy:.2f}" for accuracy in seed_result["test_accuracy"])
            for seed, seed_result in result["seeds"].items())
        lines.append(f"| {run} | {len(result['seeds'])} | "
                     + " | ".join(_cell(result["median"][f"{threshold:.3f}"])
                                  for threshold in THRESHOLDS)
                     + f" | {accuracies} |")
    return "\n".join(lines)


def _json_ready(value):
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    if isinstance(value, float) and math.isinf(value):
        return None  # never reached
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/time_to_accuracy"))
    parser.add_argument("--summarize-only", action="store_true",
                        help="train nothing: the table from the run directories OUT holds")
    options, extra = parser.parse_known_args(argv)  # the rest goes to every `tfbn run`
    if not options.summarize_only:
        total = len(options.runs) * len(options.seeds)
        for index, (run, seed) in enumerate(
                ((run, seed) for run in options.runs for seed in options.seeds), start=1):
            print(f"[{index}/{total}] {run}, seed {seed}: "
                  f"{' '.join(command(run, seed, options.out, extra)[2:])}", flush=True)
            finished = subprocess.run(command(run, seed, options.out, extra))
            if finished.returncode != 0:
                print(f"{run}, seed {seed} failed (exit {finished.returncode})", file=sys.stderr)
                return finished.returncode
    summary = summarize(options.out, options.runs, options.seeds)
    if not summary:
        print(f"no finished epochs under {options.out}", file=sys.stderr)
        return 1
    table = markdown(summary)
    options.out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(options.out / "summary.md", table + "\n")
    write_json_atomically(options.out / "summary.json", _json_ready(summary))
    print("epochs to the test accuracy (median over the seeds; the run's CPU and wall "
          "seconds at that epoch's end):")
    print(table)
    print(f"written: {options.out / 'summary.md'}, {options.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

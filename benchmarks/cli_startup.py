"""How long the `tfbn` command takes to answer `--help`, `list` and `run --help`, against
`python -c "import tensorflow"`, in interleaved processes (median of the rounds):

    python benchmarks/cli_startup.py --rounds 7     # about 1 min

Each command runs as `python -m tfbn.cli ...` (what the `tfbn` script runs), from a fresh
process; the first round is a warm-up (file caches), not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "tfbn --help": ["-m", "tfbn.cli", "--help"],
    "tfbn list": ["-m", "tfbn.cli", "list"],
    "tfbn run --help": ["-m", "tfbn.cli", "run", "--help"],
    "import tensorflow": ["-c", "import tensorflow"],
}


def seconds(arguments: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *arguments], check=True, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args(argv).rounds
    print(f"load average at the start: {os.getloadavg()}")
    times = {name: [] for name in COMMANDS}
    for index in range(rounds + 1):
        names = list(COMMANDS) if index % 2 == 0 else list(reversed(COMMANDS))
        for name in names:
            elapsed = seconds(COMMANDS[name])
            if index > 0:
                times[name].append(elapsed)
    reference = statistics.median(times["import tensorflow"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<18} {median:6.2f} s median of {rounds} ({min(values):.2f}-"
              f"{max(values):.2f}); {median / reference:.3f} of import tensorflow")
    print(f"load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

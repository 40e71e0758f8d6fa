"""TensorFlow's start-up logs stay quiet in the tfbn command and the lessons, unless asked."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(arguments, **environment):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, *arguments], capture_output=True, text=True,
                          env={**env, **environment}, cwd=ROOT)


@pytest.mark.parametrize("arguments", [
    ["-m", "tfbn.cli", "list"],
    [str(ROOT / "tutorials" / "step_4_2_batchnorm_convolutional.py"), "--help"],
])
def test_no_tensorflow_start_up_logs_by_default(arguments):
    result = run(arguments)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout


def test_a_chosen_log_level_brings_the_logs_back():
    result = run(["-m", "tfbn.cli", "list"], TF_CPP_MIN_LOG_LEVEL="0")
    assert result.returncode == 0 and result.stderr != ""

"""TensorFlow's start-up logs stay quiet in the tfbn command and the lessons, unless asked;
`import tfbn` and the command's help import no TensorFlow."""

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
    result = run(["-c", "import tfbn; tfbn.BatchNorm"], TF_CPP_MIN_LOG_LEVEL="0")
    assert result.returncode == 0 and result.stderr != ""


@pytest.mark.parametrize("code", [
    "from tfbn import data",                 # a submodule, TensorFlow imported by it
    "import tfbn, keras; tfbn.BatchNorm()",  # Keras first, then a lazy name
    "import tensorflow as tf, tfbn; tfbn.layer",
])
def test_tensorflow_imported_after_tfbn_from_anywhere_is_quiet(code):
    result = run(["-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" or code.startswith("import tensorflow")


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["run", "--help"],
                                  ["experiment", "--help"]])
def test_the_command_answers_help_and_list_without_tensorflow(argv):
    code = ("import sys\nfrom tfbn import cli\n"
            "try:\n    code = cli.main(sys.argv[1:])\nexcept SystemExit as exit:\n"
            "    code = exit.code\n"
            "assert code == 0, code\n"
            "print('imported:', sorted(m for m in ('tensorflow', 'keras', 'matplotlib') "
            "if m in sys.modules))")
    result = run(["-c", code, *argv])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "imported: []"


def test_import_tfbn_is_lazy_and_still_registers_its_keras_classes():
    code = ("import sys, tfbn\n"
            "assert 'tensorflow' not in sys.modules\n"
            "import keras\n"
            "print(keras.saving.get_registered_object('tfbn>BatchNorm').__module__, "
            "keras.saving.get_registered_object('tfbn>Bias').__module__, "
            "keras.saving.get_registered_object('tfbn>DecayToFloor').__module__)")
    result = run(["-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tfbn.layer", "tfbn.models", "tfbn.schedules"]


def test_tfbn_imports_no_private_keras_module():
    import ast

    for path in sorted((ROOT / "tfbn").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("keras.src", "keras._")), f"{path}: {name}"


def test_importing_every_module_chooses_no_matplotlib_backend():
    code = ("import importlib, pkgutil, matplotlib, tfbn\n"
            "before = dict.__getitem__(matplotlib.rcParams, 'backend')\n"
            "for module in pkgutil.walk_packages(tfbn.__path__, 'tfbn.'):\n"
            "    if not module.name.startswith('tfbn.tutorials'):\n"
            "        importlib.import_module(module.name)\n"
            "after = dict.__getitem__(matplotlib.rcParams, 'backend')\n"
            "print(before is after, before is matplotlib.rcsetup._auto_backend_sentinel)")
    result = run(["-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]  # still "choose when first needed"

"""The notebooks: generated from the lesson scripts, in sync with them, and they run."""

import json
import os
from pathlib import Path

import pytest

from tfbn import notebooks, steps

ROOT = Path(__file__).resolve().parent.parent


def test_every_lesson_has_a_notebook():
    expected = {f"{step.script}.ipynb" for step in steps.STEPS.values()} | {
        "bn_from_scratch.ipynb", "bn_in_practice.ipynb"}
    assert {path.name for path in notebooks.NOTEBOOKS.glob("*.ipynb")} == expected


@pytest.mark.parametrize("script", notebooks.lesson_scripts(), ids=lambda path: path.stem)
def test_each_notebook_is_up_to_date_with_its_script(script):
    committed = notebooks.NOTEBOOKS / f"{script.stem}.ipynb"
    assert committed.read_text() == notebooks.notebook_text(script), (
        f"{committed.name} is out of date: run `python -m tfbn.notebooks`")


def test_a_changed_script_makes_its_notebook_out_of_date(tmp_path):
    script = tmp_path / "step_4_2_batchnorm_convolutional.py"
    original = ROOT / "tutorials" / script.name
    script.write_text(original.read_text().replace("Dropout(0.25", "Dropout(0.5"))
    committed = (notebooks.NOTEBOOKS / f"{script.stem}.ipynb").read_text()
    assert notebooks.notebook_text(script) != committed


def test_the_install_cell_is_live_only_in_the_notebook():
    notebook = json.loads((notebooks.NOTEBOOKS / "step_4_2_batchnorm_convolutional.ipynb")
                          .read_text())
    install = notebook["cells"][1]
    assert install["metadata"]["tags"] == ["active-ipynb"]
    assert "\nimport importlib.util" in "".join(install["source"])
    script = (ROOT / "tutorials" / "step_4_2_batchnorm_convolutional.py").read_text()
    assert "\n# import importlib.util" in script


def test_the_4_1_notebook_runs_end_to_end(tmp_path, monkeypatch):
    """Executed as Jupyter would, on real MNIST (fetched into a fresh cache) for 2 steps."""
    import nbclient
    import nbformat

    monkeypatch.setenv("TFBN_OPTIONS", f"--epochs 1 --steps-per-epoch 2 --batch-size 16 "
                                       f"--verbose 0 --logdir {tmp_path / 'run'}")
    monkeypatch.setenv("TFBN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    path = notebooks.NOTEBOOKS / "step_4_1_batchnorm_five_layers_relu.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(notebooks.NOTEBOOKS)}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells
                      for output in cell.get("outputs", []))
    assert "step 4.1: batch norm (offset only) before each ReLU" in printed
    assert "test accuracy: 0." in printed
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["bn"] == "custom"
    assert os.environ["TFBN_OPTIONS"] and (tmp_path / "data").exists()

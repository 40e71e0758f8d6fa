"""The lessons as Jupyter notebooks, generated from their scripts (the scripts are the source).

    python -m tfbn.notebooks        # writes notebooks/<script>.ipynb for every lesson

Each script in `tutorials/` is in jupytext's percent format (`# %%` cells, `# %% [markdown]`
text); a cell tagged `active-ipynb` (the install cell) is commented out in the script and
live in the notebook. `tests/test_notebooks.py` fails when a notebook is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = ROOT / "notebooks"
LESSONS = ("step_*.py", "bn_from_scratch.py", "bn_in_practice.py")


def lesson_scripts(tutorials: Path = TUTORIALS) -> list[Path]:
    """The scripts that have a notebook: the nine steps, BN from scratch, BN in practice."""
    return sorted(path for pattern in LESSONS for path in tutorials.glob(pattern))


def notebook_text(script: Path) -> str:
    """The .ipynb text that `script` converts to."""
    import jupytext

    notebook = jupytext.read(script, fmt="py:percent")
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.metadata.pop("jupytext", None)  # no version stamp: the text depends on the script
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"  # not random, so that the same script gives the same text
    return jupytext.writes(notebook, fmt="ipynb")


def write_notebooks(tutorials: Path = TUTORIALS, notebooks: Path = NOTEBOOKS) -> list[Path]:
    notebooks.mkdir(exist_ok=True)
    written = []
    for script in lesson_scripts(tutorials):
        path = notebooks / f"{script.stem}.ipynb"
        path.write_text(notebook_text(script))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_notebooks():
        print(path.relative_to(ROOT))
    sys.exit(0)

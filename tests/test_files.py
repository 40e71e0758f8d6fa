"""tfbn.files: what it writes is whole or not there."""

import json
import os

import matplotlib.image
import pytest
from matplotlib.figure import Figure

from tfbn import files


def test_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "mnist.npz"
    target.write_bytes(b"old")

    def write_half_then_fail(file):
        file.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.write_atomically(target, write_half_then_fail)

    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["mnist.npz"]


def test_json_and_figures_are_written_whole_with_the_umasks_permissions(tmp_path):
    files.write_json_atomically(tmp_path / "a.json", {"x": [1, 2]})
    files.write_json_atomically(tmp_path / "b.json", {"x": [1, 2]}, compact=True)
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "b.json").read_text() == '{"x":[1,2]}'
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask

    figure = Figure(figsize=(2, 1), dpi=50)
    figure.add_subplot().plot([0, 1])
    files.save_figure_atomically(figure, tmp_path / "f.png")
    assert matplotlib.image.imread(tmp_path / "f.png").shape[:2] == (50, 100)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.json", "b.json", "f.png"]

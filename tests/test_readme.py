"""The README's install check runs exactly as written, and its commands exist."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def checked_commands() -> list[str]:
    block = re.search(r"<!-- readme-check: begin -->\n```bash\n(.*?)```\n<!-- readme-check: end -->",
                      README, re.S)
    assert block, "the README's install check block is missing"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_install_check_runs_as_written(tmp_path):
    """In a scratch copy of the repository's layout, with the venv's commands on PATH."""
    (tmp_path / "tutorials").symlink_to(ROOT / "tutorials")
    bin_directory = Path(sys.executable).parent
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PATH"] = f"{bin_directory}{os.pathsep}{env.get('PATH', '')}"
    assert shutil.which("tfbn", path=env["PATH"]), "tfbn is installed beside this python"
    outputs = []
    for command in checked_commands():
        result = subprocess.run(command, shell=True, cwd=tmp_path, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        outputs.append(result.stdout)
    assert "steps (tfbn run STEP):" in outputs[0] and "  5.0  " in outputs[0]
    assert "--bn {custom,keras,none}" in outputs[1]
    assert "test accuracy: 0." in outputs[3] and "test accuracy: 0." in outputs[4]
    assert "| run |" in outputs[5] and (tmp_path / "runs" / "comparison.png").exists()


def test_the_quick_start_activates_the_venv_it_creates():
    quick_start = README[README.index("## Quick start"):README.index("## The layer")]
    for line in quick_start.splitlines():
        if line.startswith("python3 -m venv .venv"):
            assert "&& . .venv/bin/activate &&" in line

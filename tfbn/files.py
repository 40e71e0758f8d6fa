"""Writing files so that a reader, or a kill, never sees half of one: the one home of it.

Everything tfbn keeps (the data cache, a run directory's JSON and CSV files, figures) is
written to a temporary file beside its path, flushed to disk, then renamed over the path.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Callable, IO


def write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write(binary_file)` on a temporary file beside `path`, then renames it over
    `path`; on any error the temporary file is removed and `path` left as it was."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open rather than mkstemp: files keep the umask's permissions, not mkstemp's 0600.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda file: file.write(text.encode()))


def write_json_atomically(path: Path, content, *, compact: bool = False) -> None:
    text = (json.dumps(content, separators=(",", ":")) if compact
            else json.dumps(content, indent=2) + "\n")
    write_text_atomically(path, text)


def save_figure_atomically(figure, path: Path) -> None:
    """Saves a matplotlib `Figure` as a PNG (Agg, whatever the backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    write_atomically(path, lambda file: FigureCanvasAgg(figure).print_figure(file, format="png"))

"""Output locations, checked before any work starts: a folder to write into, or a file to write.

    dialsum train CONFIG --run-dir runs/x/1        dialsum suite SUITE --out runs/suites/x
    dialsum predict RUN --input test.csv --out submission.csv
    dialsum make-sample --out data/mine

A path whose folder chain holds a file, a file where a folder is wanted (or the reverse), or a
folder that cannot be written is refused at once, in one line that names the option and the path,
instead of after training or generation has run.
"""

from __future__ import annotations

import os
from pathlib import Path

from dialsum.errors import DialsumError


def _nearest_existing(paths: tuple[Path, ...]) -> Path:
    return next((p for p in paths if p.exists()), Path("."))


def _refuse_blocked(path: Path, found: Path, option: str) -> None:
    if not found.is_dir():
        where = "is a file, not a folder" if found == path else f"lies under {found}, which is a file"
        raise DialsumError(f"{option} {path}: {where}; choose another path")
    if not os.access(found, os.W_OK | os.X_OK):
        raise DialsumError(f"{option} {path}: {found} is not writable; choose a folder you can write to")


def check_folder(path: str | Path, option: str) -> Path:
    """A folder that exists or can be created, and can be written."""
    path = Path(path).expanduser()
    _refuse_blocked(path, _nearest_existing((path, *path.parents)), option)
    return path


def check_file(path: str | Path, option: str) -> Path:
    """A file path whose folder exists or can be created; an existing folder there is refused."""
    text = str(path)
    path = Path(path).expanduser()
    if path.is_dir() or text.endswith(("/", os.sep)):
        raise DialsumError(f"{option} {text}: is a folder; give a file path such as {path / 'predictions.csv'}")
    _refuse_blocked(path, _nearest_existing(path.parents), option)
    if path.exists() and not os.access(path, os.W_OK):
        raise DialsumError(f"{option} {path}: exists and is not writable; choose another file")
    return path

"""Files written whole or not at all, and JSON read back with one-line errors; no pandas here.

    dialsum train CONFIG --init tiny       # every file of a run directory is written this way
    pytest tests/test_run_dir.py

Each writer writes a temporary file beside the target and renames it over the target (`os.replace`, atomic
on POSIX): a process killed mid-write leaves the old file or none, never half of one. `read_json` turns a
missing, non-UTF-8 or malformed file into a `DialsumError` that names it, the line and the fix. The suite's
state, its lock and the run files (`dialsum.runfiles`) use these without importing the CSV reader's pandas.
`JsonlFollower` reads a JSON-lines file that another process is still writing (a run's `train_log.jsonl`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dialsum.errors import DialsumError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` via a temp file in the same directory and a rename (umask permissions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def atomic_write_rows(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV (all fields quoted where needed, multi-line cells kept) atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def read_json(path: str | Path, fix: str) -> Any:
    """A JSON file; a missing, truncated or non-UTF-8 one is an error naming it, the line and `fix`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DialsumError(f"{path}: not found; {fix}") from None
    except UnicodeDecodeError:
        raise DialsumError(f"{path}: not UTF-8 text; {fix}") from None
    except json.JSONDecodeError as err:
        raise DialsumError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); {fix}"
        ) from None


class JsonlFollower:
    """The rows (JSON objects) appended to a JSON-lines file since the last call, complete lines only: a line
    the writer has not finished yet is read on a later call. A missing file has no rows yet."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def new_rows(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        rows = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

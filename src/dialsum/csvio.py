"""CSV input in the competition format (`fname,dialogue,summary,topic`), JSON input, atomic output.

Exercised by every command that reads or writes a CSV: `dialsum score`, `dialsum train`,
`dialsum predict`, `dialsum make-sample`.
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

import pandas as pd

from dialsum.errors import DialsumError


def read_table(path: str | Path, required: Sequence[str] = (), *, what: str = "CSV") -> pd.DataFrame:
    """Read a UTF-8 CSV as strings and check it: exists, not empty, required columns, unique fnames.

    Every problem raises DialsumError naming the file (and rows where that applies).
    """
    path = Path(path)
    if not path.is_file():
        raise DialsumError(f"{path}: {what} file not found; check the path")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DialsumError(
            f"{path}: not UTF-8 (invalid byte at line {line}); re-save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DialsumError(f"{path}: the file is empty; expected a header row and data rows")
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DialsumError(f"{path}: cannot parse as CSV ({str(err).strip()})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DialsumError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns)}"
        )
    if df.empty:
        raise DialsumError(f"{path}: no data rows under the header")
    if "fname" in df.columns:
        check_fnames(df, path)
    return df


def check_fnames(df: pd.DataFrame, path: str | Path) -> None:
    """Reject empty or duplicate `fname` values, naming the rows (1-based data rows)."""
    names = df["fname"].str.strip()
    empty = [i + 1 for i, v in enumerate(names) if not v]
    if empty:
        raise DialsumError(f"{path}: empty fname in row(s) {preview(empty)}; every row needs a name")
    dup = names[names.duplicated(keep=False)]
    if not dup.empty:
        shown = preview(sorted(set(dup)))
        raise DialsumError(f"{path}: duplicate fname {shown}; each fname must appear once")


def preview(items: Sequence[Any], n: int = 10) -> str:
    head = ", ".join(str(x) for x in items[:n])
    return head + (f" (+{len(items) - n} more)" if len(items) > n else "")


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

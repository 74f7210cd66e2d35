"""CSV input in the competition format (`fname,dialogue,summary,topic`), checked; atomic output is `fileio`'s.

Exercised by every command that reads or writes a CSV: `dialsum score`, `dialsum train`,
`dialsum predict`, `dialsum make-sample`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
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

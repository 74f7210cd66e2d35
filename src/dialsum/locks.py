"""A folder that one dialsum command works in at a time: an OS file lock (filelock), released by the OS
when its holder dies, with the holder's pid written beside it only to name it in a refusal.

    dialsum tune RUN_DIR        # a second `dialsum tune` on the same run is refused, naming the first one's pid
    pytest tests/test_tune.py -k lock

A killed holder leaves no lock held (the OS drops it with the process), so there is never a stale lock to
take over or to delete. The suite's own lock (`suite/lock.py`) follows the same rule for `suite.lock`.
"""

from __future__ import annotations

import os
from pathlib import Path

import filelock

from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_text


class FolderLock:
    """`<folder>/<name>.lock` held while a `command` works in `folder`; `fix` is what the refusal suggests."""

    def __init__(self, folder: Path, name: str, command: str, fix: str) -> None:
        self.lock_path, self.pid_path = folder / f"{name}.lock", folder / f"{name}.pid"
        self.command, self.fix = command, fix
        self.lock = filelock.FileLock(str(self.lock_path), timeout=0)

    def holder(self) -> str:
        try:
            pid = self.pid_path.read_text(encoding="utf-8").strip()
        except OSError:
            return f"another {self.command}"
        return f"another {self.command} (pid {pid})" if pid.isdigit() else f"another {self.command}"

    def __enter__(self) -> FolderLock:
        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise DialsumError(f"{self.lock_path}: {self.holder()} is working here; {self.fix}") from None
        atomic_write_text(self.pid_path, f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        self.pid_path.unlink(missing_ok=True)
        self.lock.release()

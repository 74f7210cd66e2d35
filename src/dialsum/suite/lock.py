"""One suite per output directory: an OS file lock (filelock), released by the OS when its holder dies.

    pytest tests/test_suite.py -k lock

`<out>/suite.lock` is locked with `flock` while a suite runs; a second suite on the same directory
is refused at once. The holder's pid is written beside it (`suite.pid`) only to name it in that
refusal: a suite that was killed leaves no lock held, so there is no stale lock to take over.
"""

from __future__ import annotations

import os
from pathlib import Path

import filelock

from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_text

LOCK_FILE = "suite.lock"
PID_FILE = "suite.pid"


class SuiteLock:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.lock = filelock.FileLock(str(out / LOCK_FILE), timeout=0)

    def holder(self) -> str:
        try:
            pid = (self.out / PID_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            return "another suite"
        return f"another suite (pid {pid})" if pid.isdigit() else "another suite"

    def refuse_if_held(self) -> None:
        """Refused before any up-front work is done, when a live suite holds the directory."""
        if not (self.out / LOCK_FILE).exists():
            return
        with self:
            pass

    def __enter__(self) -> SuiteLock:
        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise DialsumError(
                f"{self.out / LOCK_FILE}: {self.holder()} is running on this output directory; "
                "wait for it, stop it, or choose another --out"
            ) from None
        atomic_write_text(self.out / PID_FILE, f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        (self.out / PID_FILE).unlink(missing_ok=True)
        self.lock.release()

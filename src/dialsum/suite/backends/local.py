"""This machine as the suite's backend: experiments take slots (`dialsum.slots`) and run as child processes.

    dialsum suite configs/suites/main5.yaml --gpus 0,1,2,3     # one slot per GPU (default: every visible GPU)
    dialsum suite configs/suites/main5.yaml --slots 2          # CPU only: two processes, half the cores each
    pytest tests/test_suite.py -k slot

An experiment takes `gpus:` units (1 by default): that many GPUs, or CPU slots on a CPU-only run;
the slots, and how each child sees its GPUs, are `dialsum.slots`'.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

from dialsum.lifeline import Stopper, start_child
from dialsum.slots import Slot, SlotPool
from dialsum.suite.failures import read_log_tail


class LocalHandle:
    """One experiment's process on this machine."""

    def __init__(self, cmd: list[str], log_path: Path, slot: Slot) -> None:
        with log_path.open("ab") as log_file:
            self.proc = start_child(cmd, log_file, slot.env())
        self.pid = self.proc.pid
        self.node = socket.gethostname()
        self.gpus = slot.env()["CUDA_VISIBLE_DEVICES"]
        self.stopper: Stopper | None = None
        self.failure = None  # the exit code tells everything here

    def started(self) -> bool:
        return True

    def log_tail(self, log_path: Path, start: int) -> list[str]:
        return read_log_tail(log_path, start)

    def poll(self) -> int | None:
        if self.stopper is not None:
            self.stopper.advance()
        return self.proc.poll()

    def stop(self, grace_s: float) -> None:
        """Begin the stop (SIGINT, then SIGTERM and SIGKILL as `poll()` is called)."""
        if self.stopper is None:
            self.stopper = Stopper(self.proc, grace_s)

    def wait(self) -> int:
        while (code := self.poll()) is None:
            try:
                self.proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
        return code


class LocalBackend:
    """This machine: experiments take units from the pool, and run as child processes."""

    local = True

    def __init__(self, pool: SlotPool) -> None:
        self.pool = pool
        self.total, self.kind = pool.total, pool.kind

    def describe(self) -> str:
        return self.pool.describe()

    def take(self, n: int) -> Slot | None:
        return self.pool.take(n)

    def release(self, slot: Slot) -> None:
        self.pool.release(slot)

    def start(self, cmd: list[str], log_path: Path, log_start: int, slot: Slot, need: int, settings: Any) -> LocalHandle:
        return LocalHandle(cmd, log_path, slot)

    def close(self) -> None:
        return None

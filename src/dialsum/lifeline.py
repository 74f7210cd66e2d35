"""Child processes that never outlive their parent: own session, parent-death signal, stopped as a group.

    dialsum suite configs/suites/main5.yaml --slots 2     # each experiment's whole process tree
    dialsum train CONFIG --nproc 2                        # the launcher, torchrun and its ranks
    dialsum tune RUN_DIR --jobs 2                         # the tune workers
    pytest tests/test_suite.py -k "tree or orphan or lifeline"

The rule, obeyed here (Linux): every process dialsum starts gets SIGTERM when the thread that started
it exits (prctl PR_SET_PDEATHSIG), and runs in a session of its own, so a terminal's Ctrl-C reaches
only its parent, which stops it itself: SIGINT, then SIGTERM, then SIGKILL, to its process group.
Each level of a tree sets the signal for the level below: the suite for `dialsum train`, the
`--nproc` launcher for torchrun, and a rank for itself at start-up (`die_with_parent`), because
torchrun starts every rank in a new session and without it. A SIGKILL anywhere in the tree then takes
everything below within seconds, and no rank keeps a GPU's memory after its suite is gone. Where
there is no parent-death signal (macOS, Windows), a killed parent leaves its children running; the
suite's `--resume` then refuses to start a second copy beside them (`suite.process.check_no_orphan`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil

ESCALATION_S = 5.0
PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


PRCTL = _prctl()


def _child_preexec() -> None:
    """Run in the child between fork and exec: SIGTERM when its parent thread exits; and SIGINT back to its
    default and no signal blocked. A parent that ignores or blocks SIGINT (a Ray worker blocks it, a shell's
    background job ignores it) passes both on through exec, and a gentle stop would never reach the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    if PRCTL is not None:
        PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def start_child(cmd: list[str], log_file: Any = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`cmd` in its own session with the parent-death signal, its output appended to `log_file` (None:
    this process's own), with `env` added to ours."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT if log_file is not None else None,
        env=full_env, start_new_session=True, preexec_fn=_child_preexec if os.name == "posix" else None,
    )  # fmt: skip


def die_with_parent(parent_names: str) -> None:
    """For a process started by a program that gives it no parent-death signal (torchrun's ranks): set
    it now, then make sure the parent is still the one named (`parent_names` in its command line); if it
    died before the signal was set, this process is already an orphan and ends at once."""
    if PRCTL is None:
        return
    PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    try:
        parent = " ".join(psutil.Process(os.getppid()).cmdline())
    except psutil.Error:
        parent = ""
    if parent_names not in parent:
        print(f"error: the parent process ({parent_names}) is gone; stopping", file=sys.stderr)
        os._exit(143)


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pid, sig)


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """While inside: SIGINT and SIGTERM sent to this process call `handler`; the previous handlers after."""
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def forwarding(proc: subprocess.Popen[bytes]) -> contextlib.AbstractContextManager[None]:
    """While inside: SIGINT and SIGTERM sent to this process go to `proc`'s group instead."""
    return on_stop_signals(lambda signum, frame: signal_group(proc.pid, signal.Signals(signum)))


def run_forwarding(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """`cmd` as a child that dies with this process; SIGINT/SIGTERM sent here are passed on to it, and
    this process waits for it to stop (torchrun stops its ranks first). Its exit code."""
    proc = start_child(cmd, None, env)
    with forwarding(proc):
        return proc.wait()


class Stopper:
    """SIGINT now; SIGTERM after `grace_s`; SIGKILL after ESCALATION_S more. Call `advance()` to escalate."""

    def __init__(self, proc: subprocess.Popen[bytes], grace_s: float) -> None:
        self.proc = proc
        self.steps = [(signal.SIGINT, grace_s), (signal.SIGTERM, ESCALATION_S), (signal.SIGKILL, ESCALATION_S)]
        self.next_at = 0.0
        self.advance()

    def advance(self) -> None:
        if self.proc.poll() is not None or not self.steps or time.monotonic() < self.next_at:
            return
        sig, wait_s = self.steps.pop(0)
        signal_group(self.proc.pid, sig)
        self.next_at = time.monotonic() + wait_s

    def wait(self, poll_s: float = 0.1) -> int:
        """Escalate until the process has ended; its exit code."""
        while (code := self.proc.poll()) is None:
            self.advance()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=poll_s)
        return code

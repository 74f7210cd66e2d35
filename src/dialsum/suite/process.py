"""The experiment's process: its command line, its start, its stop, and the check for an orphan.

    pytest tests/test_suite.py -k "sigint or orphan or command"

Each experiment is one `python -m dialsum.cli train ...` process in its own session (a terminal's
Ctrl-C reaches only the suite, which stops its children itself). On Linux the child also gets
SIGTERM when the suite dies (the parent-death signal), so a killed suite leaves no training behind.
A stop is SIGINT (the child finishes its log), then SIGTERM, then SIGKILL, to the whole process
group; `Stopper` escalates without blocking, so the other children keep being watched meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from dialsum.errors import DialsumError
from dialsum.suite.state import ExperimentRecord, TrainArgs

ESCALATION_S = 5.0


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec function that makes the child get SIGTERM if the suite dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return preexec


PREEXEC = _parent_death_signal()


def start_child(cmd: list[str], log_file: Any, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The child in its own session, its output appended to `log_file`, with `env` added to ours."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=full_env,
        start_new_session=True, preexec_fn=PREEXEC,
    )  # fmt: skip


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pid, sig)


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


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def check_no_orphan(rec: ExperimentRecord) -> None:
    """Refuse to resume while the previous suite's training process for it still runs."""
    pid = rec.pid
    if pid is None or pid == os.getpid() or not pid_alive(pid):
        return
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return
    if "dialsum" in cmdline and str(rec.run_dir or "") in cmdline:
        raise DialsumError(
            f"{rec.name}: its training process from the previous suite (pid {pid}) is still running; "
            f"stop it (kill {pid}) before --resume"
        )


def ensemble_command(runs: list[Path], out: Path, spec: Any) -> list[str]:
    """`python -m dialsum.cli ensemble RUN... --out OUT` as the suite file's ensemble section says."""
    cmd = [sys.executable, "-m", "dialsum.cli", "ensemble", *map(str, runs), "--out", str(out),
           "--candidates", str(spec.candidates)]
    return cmd + (["--weighted"] if spec.weighted else []) + (["--tuned"] if spec.tuned else [])


def train_command(config: str, entry_sets: list[str], args: TrainArgs, run_dir: Path, extra: list[str],
                  resume: bool, nproc: int = 1, tune: Any = None) -> list[str]:
    """`python -m dialsum.cli train CONFIG --run-dir RUN ...` with the suite's options and overrides."""
    cmd = [sys.executable, "-m", "dialsum.cli", "train", config, "--run-dir", str(run_dir)]
    if args.init:
        cmd += ["--init", args.init]
    if args.one_epoch:
        cmd.append("--one-epoch")
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    if resume:
        cmd.append("--resume")
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    if tune is not None:  # then its generation tuning, in the same child
        cmd += ["--tune", str(tune.trials)] + (["--tune-dev-rows", str(tune.dev_rows)] if tune.dev_rows else [])
    for item in args.overrides(entry_sets, extra):
        cmd += ["--set", item]
    return cmd

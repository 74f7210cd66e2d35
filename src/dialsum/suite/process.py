"""The experiment's process: its command line, and the check for processes a killed suite left behind.

    pytest tests/test_suite.py -k "orphan or command"

Each experiment is one `python -m dialsum.cli train ...` process, started by `dialsum.lifeline`: in
its own session, with the parent-death signal, stopped as a group (SIGINT, SIGTERM, SIGKILL), so a
killed suite leaves no training behind, down to the ranks of a `gpus: N` entry. Before an experiment
starts again, `check_no_orphan` looks for any process of its previous run still alive: every dialsum
process whose command line names its run directory or another path in its folder (launcher, torchrun,
ranks, tune workers; a sweep entry's sweep and its trials), and any process left in its recorded
process group.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from dialsum.errors import DialsumError
from dialsum.suite.state import ExperimentRecord, TrainArgs
from dialsum.tune import completed_trials

ORPHAN_WAIT_S = 15.0  # processes that got the parent-death signal may still be finishing their exit


class SuiteInterrupted(Exception):
    """SIGINT or SIGTERM reached the suite: stop every child, save, report, exit 130."""


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def experiment_processes(rec: ExperimentRecord, out: Path) -> list[int]:
    """Live dialsum processes of this experiment: naming its folder or a path in it (its run directory; a sweep
    entry's sweep, whose driver runs in a session of its own), or in its recorded group."""
    folder = str((out / rec.run_dir).resolve().parent) if rec.run_dir else None
    group = rec.pid if rec.node in (None, socket.gethostname()) else None  # a pid recorded here, not on a Ray node
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        pid, cmd = proc.info["pid"], proc.info["cmdline"] or []
        if pid == os.getpid() or not any("dialsum" in part for part in cmd) or not pid_alive(pid):
            continue
        if (folder and _names_inside(cmd, folder)) or (group and _group(pid) == group):
            found.append(pid)
    return found


def _names_inside(cmd: list[str], folder: str) -> bool:
    return any(part == folder or part.startswith(folder + os.sep) for part in cmd)


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def check_no_orphan(rec: ExperimentRecord, out: Path, wait_s: float = ORPHAN_WAIT_S) -> None:
    """Refuse to start an experiment again while a process of its previous run still runs (after giving
    those that are dying `wait_s` to end): two processes must never train into one run directory."""
    deadline = time.monotonic() + wait_s
    while (pids := experiment_processes(rec, out)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if pids:
        listed = ", ".join(map(str, pids))
        what = "a process" if len(pids) == 1 else f"{len(pids)} processes"
        raise DialsumError(f"{rec.name}: {what} of its previous run {'is' if len(pids) == 1 else 'are'} still "
                           f"running (pid {listed}); stop {'it' if len(pids) == 1 else 'them'} "
                           f"(kill {listed.replace(',', '')}) before --resume")


def tune_trials_left(run_dir: Path, trials: int) -> int:
    """The trials a resumed entry's tune step still owes its study (`RUN/tune/study.db`): those it finished
    before the kill count. At least one: `train --tune` takes no 0 (a study already complete gets one more)."""
    done = completed_trials(run_dir)
    return trials if done is None else max(1, trials - done)


def ensemble_command(runs: list[Path], out: Path, spec: Any) -> list[str]:
    """`python -m dialsum.cli ensemble RUN... --out OUT` as the suite file's ensemble section says."""
    cmd = [sys.executable, "-m", "dialsum.cli", "ensemble", *map(str, runs), "--out", str(out),
           "--candidates", str(spec.candidates)]
    return cmd + (["--weighted"] if spec.weighted else []) + (["--tuned"] if spec.tuned else [])


def run_flags(args: TrainArgs) -> list[str]:
    """`--init`, `--one-epoch`, `--max-steps` as the suite was given them, for its `train` and `sweep` children."""
    flags = ["--init", args.init] if args.init else []
    if args.one_epoch:
        flags.append("--one-epoch")
    return flags + (["--max-steps", str(args.max_steps)] if args.max_steps else [])


def train_command(config: str, entry_sets: list[str], args: TrainArgs, run_dir: Path, extra: list[str],
                  resume: bool, nproc: int = 1, tune: Any = None) -> list[str]:
    """`python -m dialsum.cli train CONFIG --run-dir RUN ...` with the suite's options and overrides."""
    cmd = [sys.executable, "-m", "dialsum.cli", "train", config, "--run-dir", str(run_dir), *run_flags(args)]
    if resume:
        cmd.append("--resume")
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    if tune is not None:  # then its generation tuning, in the same child
        cmd += ["--tune", str(tune.trials)] + (["--tune-dev-rows", str(tune.dev_rows)] if tune.dev_rows else [])
    for item in args.overrides(entry_sets, extra):
        cmd += ["--set", item]
    return cmd

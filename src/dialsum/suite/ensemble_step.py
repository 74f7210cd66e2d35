"""The suite's step after its experiments: the MBR ensemble of those its file names, once they all finished.

    dialsum suite configs/suites/main5.yaml        # a suite file with an `ensemble:` section
    pytest tests/test_suite.py -k ensemble

The ensemble runs as its own `dialsum ensemble` child process (`dialsum.lifeline`: its own session, the
parent-death signal), its output in `<out>/ensemble.log`. One built after its members last wrote their
results is kept; an older or unfinished one is moved aside (never deleted) and built again. A Ctrl-C or
SIGTERM reaching the suite stops it as it stops an experiment; `--resume` builds it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dialsum import lifeline
from dialsum.runfiles import ENSEMBLE, METRICS, TUNE_RESULT
from dialsum.suite import process
from dialsum.suite.schema import SuiteEnsemble
from dialsum.suite.state import ExperimentRecord

POLL_S = 0.5


@dataclass
class EnsembleStep:
    spec: SuiteEnsemble
    out: Path
    event: Callable[[str], None]  # the suite's display
    grace_s: float  # after SIGINT, before SIGTERM and SIGKILL
    stopping: Callable[[], str | None]  # the signal that is stopping the suite, once one came
    set_aside: Callable[[Path, str], None]  # move a folder aside, and record it in the suite's state

    def run(self, records: list[ExperimentRecord]) -> bool:
        """Build the ensemble if it is due; True when it failed. `process.SuiteInterrupted` when the suite is
        stopped meanwhile."""
        by_name = {r.name: r for r in records}
        missing = [n for n in self.spec.runs if by_name[n].state != "finished"]
        if missing:
            self.event(f"ensemble: not built, {', '.join(missing)} did not finish")
            return False
        target, runs = self.out / "ensemble", [self.out / n / "run" for n in self.spec.runs]
        if up_to_date(target, runs, self.spec.tuned):
            self.event(f"ensemble: {target} is up to date with its runs; kept")
            return False
        self.set_aside(target, "rebuilt from the runs as they are now")
        cmd = process.ensemble_command(runs, target, self.spec)
        self.event(f"ensemble: {', '.join(self.spec.runs)} -> {target}")
        with (self.out / "ensemble.log").open("ab") as log:
            proc = lifeline.start_child(cmd, log)
        code = self._watch(proc)
        self.event("ensemble: " + ("built" if code == 0 else f"failed (exit {code}); see ensemble.log"))
        return code != 0

    def _watch(self, proc: Any) -> int:
        """Wait for the ensemble's process, stopping it on Ctrl-C or SIGTERM."""
        while (code := proc.poll()) is None:
            signal_name = self.stopping()
            if signal_name:
                self.event(f"ensemble: stopping ({signal_name}); --resume builds it again")
                lifeline.Stopper(proc, self.grace_s).wait()
                raise process.SuiteInterrupted(signal_name)
            time.sleep(POLL_S)
        return code


def up_to_date(target: Path, runs: list[Path], tuned: bool) -> bool:
    """An ensemble that finished (ensemble.json) after each of its runs last wrote its results."""
    done = target / ENSEMBLE
    if not done.is_file():
        return False
    names, stamp = [METRICS, *([TUNE_RESULT] if tuned else [])], done.stat().st_mtime
    return all((run / n).is_file() and (run / n).stat().st_mtime <= stamp for run in runs for n in names)

"""One sweep trial's files and process: its folder, its `dialsum train` command, the dev scores it logs,
its result, and the removal of its checkpoints.

    dialsum sweep CONFIG --trials 20 [--keep-checkpoints]
    pytest tests/test_sweep.py -k "trial or evals or checkpoints"

A trial lives in `OUT/trials/NNN/`: `run/` is its run directory (as `dialsum train --run-dir` writes it) and
`trial.log` its process's output, as a suite experiment's `run/` and `suite.log`. The process is started,
stopped and classified as a suite experiment's is (`dialsum.suite.backends`, `dialsum.suite.failures`). Its
dev scores are read from `run/train_log.jsonl` as they are written, one complete line at a time.

Disk: the sweep keeps the best trial's run directory whole; every other finished trial keeps its metrics,
logs, config and model, and its `checkpoints/` (and any incomplete checkpoints a kill left) are removed once it
is done and not the best, or when a later trial becomes the best. That removal is the only one the sweep
makes, inside its own trial folders; `--keep-checkpoints` keeps them all.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialsum import runfiles
from dialsum.fileio import JsonlFollower
from dialsum.suite.state import INCOMPLETE

TRIALS = "trials"
LOG = "trial.log"


def trial_folder(out: Path, number: int) -> Path:
    return out / TRIALS / f"{number:03d}"


def run_dir(out: Path, number: int) -> Path:
    return trial_folder(out, number) / "run"


class EvalReader:
    """The dev scores a trial logs in `train_log.jsonl`, read as they appear (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.rows, self.last_step = JsonlFollower(path), 0

    def new(self) -> list[tuple[int, float]]:
        """(training step, dev final) of each evaluation logged since the last call."""
        found = []
        for row in self.rows.new_rows():
            self.last_step = max(self.last_step, int(row.get("step", 0)))
            if isinstance(row.get("eval_final"), (int, float)):
                found.append((int(row["step"]), float(row["eval_final"])))
        return found


@dataclass
class TrialJob:
    """A trial's running attempt."""

    number: int
    trial: Any  # optuna.trial.Trial
    params: dict[str, Any]
    effective: int
    folder: Path
    slot: Any
    handle: Any
    log_start: int
    evals: EvalReader
    started: float = field(default_factory=time.monotonic)
    reported: set[int] = field(default_factory=set)
    pruned_at: int | None = None  # the step at which the pruner stopped it
    retried: bool = False
    placed: bool = False

    @property
    def run_dir(self) -> Path:
        return self.folder / "run"


def result(run: Path) -> float | None:
    """A finished trial's value: the dev score (morpheme final) in its metrics.json, or None."""
    metrics, _ = runfiles.load(run / runfiles.METRICS, runfiles.RunMetrics)
    return metrics.dev_final if metrics else None


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def remove_checkpoints(run: Path) -> int:
    """A trial done and not the best loses its checkpoints (and incomplete ones): the bytes freed. Nothing
    else is removed."""
    freed = 0
    for name in ("checkpoints", INCOMPLETE):
        path = run / name
        if path.is_dir():
            freed += folder_bytes(path)
            shutil.rmtree(path)
    return freed

"""Reading what the report is built from: the suite's typed state, each run directory and memory log.

The run files are read through their typed models (`dialsum.runfiles`). A run file that exists but cannot
be read or does not match is a one-line error for `dialsum report` (`strict`), and a note in the report the
suite writes while it runs (a report problem never stops the experiments); a missing file is a note.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialsum import runfiles
from dialsum.errors import DialsumError
from dialsum.runfiles import EnsembleResult, RunMetrics, TuneResult
from dialsum.suite.state import ExperimentRecord, SuiteState, read_state

FIX = "restore the file or move it aside, then run dialsum report again"
M = runfiles.M


@dataclass
class Experiment:
    """One suite record with what could be read from its run directory and memory log."""

    index: int
    record: ExperimentRecord
    run_dir: Path | None
    metrics: RunMetrics = field(default_factory=RunMetrics)
    log: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    submission: Path | None = None
    notes: list[str] = field(default_factory=list)
    tune: TuneResult | None = None  # its tune/result.json (dialsum tune), when tuned

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def label(self) -> str:
        return self.record.label or self.name

    @property
    def state(self) -> str:
        return self.record.state


def load_suite_state(path: Path) -> SuiteState:
    """The suite's state file, typed; every problem is a one-line DialsumError."""
    if not path.is_file():
        raise DialsumError(f"{path}: suite state file not found; pass the directory a suite run wrote")
    return read_state(path)


def load_experiment(index: int, record: ExperimentRecord, out_dir: Path, strict: bool = False) -> Experiment:
    """Read what exists of one experiment's files; problems become notes (with `strict`, a run file that
    exists but cannot be used is an error)."""
    exp = Experiment(index, record, resolve_path(record.run_dir, out_dir))
    if exp.run_dir is not None:
        metrics_path = exp.run_dir / runfiles.METRICS
        expected = exp.state == "finished" or metrics_path.exists()
        exp.metrics = read_run_file(metrics_path, RunMetrics, exp.notes, strict, expected) or RunMetrics()
        exp.log = read_train_log(exp.run_dir / "train_log.jsonl", exp.notes)
        exp.submission = find_submission(exp.run_dir, exp.metrics, exp.notes)
        tune = exp.run_dir / runfiles.TUNE_RESULT
        exp.tune = read_run_file(tune, TuneResult, exp.notes, strict, tune.exists())
    elif exp.state == "finished":
        exp.notes.append("no run directory recorded")
    memory_csv = resolve_path(record.memory_csv, out_dir)
    if memory_csv is not None:
        exp.memory = read_memory_csv(memory_csv, exp.notes)
    return exp


def read_run_file(path: Path, model: type[M], notes: list[str], strict: bool, expected: bool = True) -> M | None:
    """A typed run file; why it cannot be used is a note (when it was `expected`), or with `strict` an error
    for one that exists."""
    if strict and path.exists():
        return runfiles.read(path, model, FIX)
    found, problem = runfiles.load(path, model)
    if problem and expected:
        notes.append(problem)
    return found


def read_ensemble(out_dir: Path, strict: bool) -> EnsembleResult | None:
    """The suite's ensemble (`ensemble/ensemble.json`), when it built one; without `strict`, None for one that
    cannot be read (the report then shows no ensemble)."""
    return read_run_file(out_dir / "ensemble" / runfiles.ENSEMBLE, EnsembleResult, [], strict)


def resolve_path(value: Any, base: Path) -> Path | None:
    """A recorded path; a relative one is taken relative to the report directory."""
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else base / path


def read_train_log(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Parse a JSON-lines log, skipping blank and unparseable lines (a killed run's last line)."""
    if not path.is_file():
        return []
    entries, skipped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if isinstance(entry, dict):
            entries.append(entry)
        else:
            skipped += 1
    if skipped:
        notes.append(f"{path.name}: {skipped} unparseable line(s) skipped")
    return entries


def read_memory_csv(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Samples of `time_s,kind,used_mb,total_mb,...`; rows without time or usage are skipped."""
    if not path.is_file():
        notes.append(f"memory log {path.name} missing")
        return []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        notes.append(f"memory log {path.name} unreadable ({type(err).__name__})")
        return []
    samples = []
    for row in rows:
        time_s, used = to_number(row.get("time_s")), to_number(row.get("used_mb"))
        if time_s is not None and used is not None:
            kind = (row.get("kind") or "").strip() or "gpu"
            samples.append(
                {"time_s": time_s, "kind": kind, "used_mb": used, "total_mb": to_number(row.get("total_mb"))}
            )
    return samples


def find_submission(run_dir: Path, metrics: RunMetrics, notes: list[str]) -> Path | None:
    name = metrics.submission
    if not name:
        return None
    path = resolve_path(name, run_dir)
    if path is None or not path.is_file():
        notes.append(f"submission {name} listed in metrics.json but not found")
        return None
    return path


def to_number(value: Any) -> float | None:
    """A finite float from a number or numeric string; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None

"""The suite's state: one typed record per experiment, saved atomically; the report reads the same.

    dialsum suite configs/suites/main5.yaml --resume      # reads <out>/suite_state.json
    dialsum report runs/suites/main5                      # so does the report
    pytest tests/test_suite.py -k state

`SuiteState` is the whole file: the suite's name, the options it trains with (`TrainArgs`), the
option changes taken on `--resume`, and an `ExperimentRecord` per experiment (state, attempts, slot,
node, GPUs, pid, exit code, failure, timings, files, and the folders moved aside). Only the suite's
driver writes it, after every change, with a temporary file and a rename. Files written by an earlier
dialsum (version 1: the same keys, untyped) are read as version 2; anything else is refused with one
line.

Nothing here deletes a user's work: a run directory that must make way for a fresh start, and a
checkpoint a kill left half-written, are moved aside (`move_aside`: `run` -> `run.1`, `run.2`, ...).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_text, read_json
from dialsum.rundir import checkpoint_complete, is_run

if TYPE_CHECKING:
    from dialsum.suite.schema import SuiteFile

STATE_FILE = "suite_state.json"
VERSION = 2
# A run that failed out of memory even at the retry's micro-batch cannot go on with its batch: it starts
# fresh (the old run moved aside). Every other run directory that holds a run is continued.
FRESH_KINDS = ("oom",)
INCOMPLETE = "incomplete-checkpoints"

State = Literal["pending", "waiting", "running", "finished", "failed", "interrupted", "skipped"]
FailureKind = Literal["oom", "cuda", "config", "data", "killed", "timeout", "other"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainArgs(_Model):
    """What every experiment of the suite trains with; saved for --resume."""

    init: str | None = None  # None: each config's model.init
    one_epoch: bool = False
    max_steps: int | None = None
    sets: list[str] = Field(default_factory=list)
    data: str | None = None

    def overrides(self, entry_sets: list[str], extra: list[str] | None = None) -> list[str]:
        """--set values in precedence order: suite entry, command line, the suite's own adaptations."""
        data = [f"data.dir={self.data}"] if self.data else []
        return [*entry_sets, *self.sets, *data, *(extra or [])]


class Failure(_Model):
    kind: FailureKind
    message: str
    lines: list[str] = Field(default_factory=list)


class MemorySummary(_Model):
    """The suite's memory monitor over one attempt (GPU memory, or the process tree's RSS)."""

    kind: str
    peak_mb: float
    samples: int = 0
    warnings: int = 0
    note: str = ""
    csv: str = ""


class WaitInfo(_Model):
    waited_s: float
    message: str


class Aside(_Model):
    """A folder the suite moved out of the way instead of deleting it (paths relative to the suite directory)."""

    source: str
    moved_to: str
    reason: str
    at: str


class ExperimentRecord(_Model):
    name: str
    label: str = ""
    config: str = ""
    state: State = "pending"
    failure: Failure | None = None
    message: str | None = None  # why it stopped, when not a failure (interrupted)
    expected_minutes: float = 0.0
    wall_seconds: float = 0.0
    attempts: int = 0
    slot: str | None = None  # the GPUs (gpu0+gpu1) or CPU slot (cpu1) of its last attempt
    node: str | None = None  # the host it ran on
    gpus: list[str] = Field(default_factory=list)  # CUDA_VISIBLE_DEVICES of its last attempt
    pid: int | None = None  # only while it runs
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    run_dir: str | None = None  # relative to the suite directory
    memory_csv: str | None = None
    log: str | None = None
    adaptations: list[str] = Field(default_factory=list)
    overrides: list[str] = Field(default_factory=list)  # the suite's own --set values (OOM retry)
    memory: MemorySummary | None = None
    wait: WaitInfo | None = None
    moved_aside: list[Aside] = Field(default_factory=list)

    def status_text(self) -> str:
        """`finished`, or `failed (oom)`: the one wording of a state with its failure kind."""
        return f"{self.state} ({self.failure.kind})" if self.failure else self.state


class SuiteState(_Model):
    version: int = VERSION
    suite: str
    description: str = ""  # the suite file's: it heads the report
    suite_file: str = ""
    train_args: TrainArgs = Field(default_factory=TrainArgs)
    option_changes: list[str] = Field(default_factory=list)
    updated: str = ""
    records: list[ExperimentRecord] = Field(default_factory=list)
    moved_aside: list[Aside] = Field(default_factory=list)  # the suite's own folders (an earlier ensemble)

    def record(self, name: str) -> ExperimentRecord:
        return next(r for r in self.records if r.name == name)

    def save(self, path: Path) -> None:
        self.updated = now()
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def read_state(path: Path) -> SuiteState:
    """The state file as typed records; a damaged or foreign one is one line that names it."""
    data = read_json(path, "use another --out")
    if isinstance(data, dict) and data.get("version", 1) == 1:
        data = {**data, "version": VERSION}  # version 1 had the same keys, untyped
    try:
        return SuiteState.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DialsumError(
            f"{path}: not a suite state this dialsum can read ({where}: {first['msg']}); use another --out"
        ) from None


def new_record(name: str, label: str, config: str, expected_minutes: float) -> ExperimentRecord:
    return ExperimentRecord(name=name, label=label or name, config=config, expected_minutes=expected_minutes)


def next_action(rec: ExperimentRecord, out: Path) -> str:
    """skip (finished), resume (from its last checkpoint) or fresh (start over; an old run is moved aside).

    Whatever state the record was saved in (waiting, running, interrupted, failed), a run directory
    that holds a run is continued, unless it failed out of memory (its micro-batch must change). One
    killed before it wrote its config holds no run, and starts fresh.
    """
    if rec.state == "finished":
        return "skip"
    started = bool(rec.run_dir) and is_run(out / str(rec.run_dir))
    kind = rec.failure.kind if rec.failure else None
    return "resume" if started and kind not in FRESH_KINDS else "fresh"


def resume_args(stored: TrainArgs | None, given: dict[str, Any]) -> tuple[TrainArgs, list[str]]:
    """The stored options, with those given again on --resume replacing them; and each change, in words.

    An option saved in the state never locks the user out: a corrected --data, --set or --init is
    taken and recorded. Experiments that continue from a checkpoint still refuse a change that
    reshapes their model (`train --resume` compares the settings).
    """
    base = stored.model_copy(deep=True) if stored else TrainArgs()
    changes = []
    for key, value in given.items():
        if value is None or value == []:
            continue
        if stored and value != getattr(base, key):
            changes.append(f"--{key.replace('_', '-')}: {getattr(base, key)!r} at the start, {value!r} now")
        setattr(base, key, value)
    # the two ways to shorten training exclude each other: one given now replaces the stored other
    # (both given at once stay both, for check_train_args to refuse)
    if given.get("max_steps") is not None and not given.get("one_epoch"):
        base.one_epoch = False
    elif given.get("one_epoch") and given.get("max_steps") is None:
        base.max_steps = None
    return base, changes


def move_aside(path: Path, into: Path | None = None) -> Path | None:
    """Rename `path` to the first free `NAME.1`, `NAME.2`, ... (in `into`, else beside it); the new path,
    or None when there was nothing there. An empty folder is simply removed: it holds no work."""
    if not path.exists():
        return None
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        return None
    into = into or path.parent
    into.mkdir(parents=True, exist_ok=True)
    stem, suffix = (path.stem, path.suffix) if path.is_file() else (path.name, "")
    n = 1
    while (target := into / f"{stem}.{n}{suffix}").exists():
        n += 1
    path.rename(target)
    return target


def clear_partial_checkpoints(run_dir: Path) -> list[str]:
    """Move incomplete checkpoint-N folders (a kill mid-save; `rundir.checkpoint_complete` is the rule) into
    `RUN/incomplete-checkpoints/`, out of transformers' way (it would resume from, or rotate, them)."""
    moved = []
    for ckpt in sorted((run_dir / "checkpoints").glob("checkpoint-*")):
        if ckpt.is_dir() and not checkpoint_complete(ckpt):
            target = run_dir / INCOMPLETE / ckpt.name
            if target.exists():
                target = move_aside(ckpt, run_dir / INCOMPLETE) or target
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                ckpt.rename(target)
            moved.append(ckpt.name)
    return moved


def merge_records(suite: SuiteFile, old: list[ExperimentRecord]) -> list[ExperimentRecord]:
    """Records in suite order; earlier records (matched by name) keep their state, their file fields refresh."""
    by_name = {r.name: r for r in old}
    records = []
    for entry in suite.experiments:
        rec = by_name.pop(entry.name, None) or new_record(entry.name, entry.label, entry.config,
                                                           entry.expected_minutes)
        rec.label, rec.config, rec.expected_minutes = entry.label or entry.name, entry.config, entry.expected_minutes
        records.append(rec)
    return records + list(by_name.values())

"""A sweep's options: checked as typed, saved in `OUT/sweep.json`, and on `--resume` taken from there, with
the options given again compared to the stored ones.

    dialsum sweep CONFIG --trials 20 --init tiny --max-steps 60 --out runs/sweeps/kobart
    dialsum sweep CONFIG --resume --out runs/sweeps/kobart --trials 30      # 10 more trials
    pytest tests/test_sweep.py -k options

What shapes a trial (the config, `--init`, `--max-steps`/`--one-epoch`, `--data`, `--set`, `--pruner`,
`--dev-rows`, `--storage`) cannot change on `--resume`: the trials so far would not compare with the next
ones, so a change is refused, naming each option. `--trials`, `--timeout`, the slots and
`--keep-checkpoints` may change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dialsum import config
from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_text, read_json
from dialsum.sweep.study import PRUNERS

RECORD = "sweep.json"  # the sweep's own files in OUT
CONFIG_SNAPSHOT = "sweep_config.yaml"
SEARCH, HELDOUT = "dev_search.csv", "dev_heldout.csv"
BEST = "best.yaml"
TRIALS_CSV = "trials.csv"  # a row per trial, rewritten after every trial (`sweep.report`)
SHAPING = ("config", "init", "max_steps", "one_epoch", "data", "sets", "pruner", "dev_rows", "storage")


@dataclass
class SweepOptions:
    config: str
    trials: int | None = None  # None: the stored count (--resume); required for a new sweep
    init: str | None = None
    max_steps: int | None = None
    one_epoch: bool = False
    data: str | None = None
    out: str | None = None
    sets: list[str] = field(default_factory=list)
    pruner: str | None = None  # None: median (or the stored one)
    timeout_minutes: float | None = None
    resume: bool = False
    storage: str | None = None
    keep_checkpoints: bool = False
    dev_rows: int | None = None
    gpus: str | None = None
    slots: int | None = None
    backend: str = "local"
    address: str | None = None
    cpu_threads: int | None = None  # a suite's sweep entry: its trials' torch threads, the suite's CPU slot's share


def default_out(cfg: Any) -> Path:
    """The sweep folder where --out is not given: runs/sweeps/<experiment name> under the config's output_dir."""
    return Path(cfg.experiment.output_dir) / "sweeps" / cfg.experiment.name


class SweepRecord(BaseModel):
    """`OUT/sweep.json`: what the sweep was started with (paths absolute)."""

    model_config = ConfigDict(extra="forbid")

    config: str
    trials: int = Field(..., ge=1)
    init: str | None = None
    max_steps: int | None = None
    one_epoch: bool = False
    data: str | None = None
    sets: list[str] = Field(default_factory=list)
    pruner: str = "median"
    dev_rows: int | None = None
    storage: str | None = None


def check_options(opts: SweepOptions) -> None:
    """The options as typed, before anything is read or written."""
    if opts.trials is not None and opts.trials < 1:
        raise DialsumError(f"--trials {opts.trials}: must be at least 1")
    if opts.trials is None and not opts.resume:
        raise DialsumError("--trials N: how many trials the sweep runs (the config's own settings are trial 0)")
    if opts.timeout_minutes is not None and opts.timeout_minutes <= 0:
        raise DialsumError(f"--timeout {opts.timeout_minutes:g}: minutes, more than 0")
    if opts.pruner is not None and opts.pruner not in PRUNERS:
        raise DialsumError(f"--pruner {opts.pruner}: choose {', '.join(PRUNERS[:-1])} or {PRUNERS[-1]}")
    if opts.cpu_threads is not None and opts.cpu_threads < 1:
        raise DialsumError(f"--cpu-threads {opts.cpu_threads}: must be at least 1")
    if opts.dev_rows is not None and opts.dev_rows < 1:
        raise DialsumError(f"--dev-rows {opts.dev_rows}: must be at least 1; leave it out to search on half of dev")
    config.check_init(opts.init)
    config.check_max_steps(opts.max_steps, opts.one_epoch)


def given_record(opts: SweepOptions) -> dict[str, Any]:
    """The options given now, as the record stores them (None where not given)."""
    return {"config": str(Path(opts.config).resolve()), "trials": opts.trials, "init": opts.init,
            "max_steps": opts.max_steps, "one_epoch": opts.one_epoch or None,
            "data": str(Path(opts.data).resolve()) if opts.data else None, "sets": list(opts.sets) or None,
            "pruner": opts.pruner, "dev_rows": opts.dev_rows, "storage": _storage(opts.storage)}


def _storage(storage: str | None) -> str | None:
    return storage if storage is None or "://" in storage else str(Path(storage).resolve())


def settle_record(out: Path, opts: SweepOptions) -> SweepRecord:
    """A new sweep's record, or (--resume) the stored one with the options given now taken or refused."""
    path, given = out / RECORD, given_record(opts)
    if path.exists() and not opts.resume:
        raise DialsumError(f"{path}: a sweep already ran in {out}; continue it with --resume, or choose another --out")
    if not path.exists():
        return SweepRecord.model_validate({k: v for k, v in given.items() if v is not None})
    stored = read_record(path)
    changed = [f"{_option(k)}: {getattr(stored, k)!r} at the start, {v!r} now" for k, v in given.items()
               if k in SHAPING and v is not None and v != getattr(stored, k)]
    if changed:
        raise DialsumError(f"{out}: --resume continues the sweep with the options it started with; "
                           f"{'; '.join(changed)}; drop the changed option(s), or start a new sweep in another --out")
    return stored.model_copy(update={"trials": given["trials"] or stored.trials})


def _option(key: str) -> str:
    return "CONFIG" if key == "config" else "--set" if key == "sets" else f"--{key.replace('_', '-')}"


def read_record(path: Path) -> SweepRecord:
    try:
        return SweepRecord.model_validate(read_json(path, "use another --out"))
    except ValidationError as err:
        first = err.errors()[0]
        raise DialsumError(f"{path}: not a sweep record this dialsum can read ({'.'.join(map(str, first['loc']))}: "
                           f"{first['msg']}); use another --out") from None


def write_record(out: Path, record: SweepRecord) -> None:
    atomic_write_text(out / RECORD, record.model_dump_json(indent=2) + "\n")


def length_option(max_steps: int | None, one_epoch: bool) -> str | None:
    """The option that fixes every trial's length, as typed."""
    if max_steps:
        return f"--max-steps {max_steps}"
    return "--one-epoch" if one_epoch else None

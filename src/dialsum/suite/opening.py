"""What a suite run settles before its loop starts: the options, the training arguments it runs with
(on --resume the stored ones, with the changes given now), the state to continue, and the backend.

    dialsum suite configs/suites/main5.yaml --resume --data /corrected/path
    dialsum suite configs/suites/main5.yaml --resume --restart kobart_baseline
    pytest tests/test_suite.py -k "resume or restart"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialsum.device import cpu_core_count
from dialsum.errors import DialsumError
from dialsum.slots import plan_slots
from dialsum.suite import checks
from dialsum.suite.backends.local import LocalBackend
from dialsum.suite.backends.ray import RayBackend
from dialsum.suite.schema import SuiteFile, split_names
from dialsum.suite.state import STATE_FILE, SuiteState, TrainArgs, merge_records, now, read_state, resume_args


@dataclass
class SuiteOptions:
    suite_file: str
    init: str | None = None
    one_epoch: bool | None = None
    max_steps: int | None = None
    resume: bool = False
    only: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    out: str | None = None
    sets: list[str] = field(default_factory=list)
    data: str | None = None
    gpus: str | None = None
    slots: int | None = None
    backend: str = "local"  # local | ray
    address: str | None = None  # Ray: auto or HOST:PORT (None: a new local instance)
    live: bool | None = None  # None: a live table when stdout is a terminal
    restart: list[str] = field(default_factory=list)  # with --resume: start these fresh (old runs moved aside)


def given_args(opts: SuiteOptions) -> dict[str, Any]:
    data = str(Path(opts.data).resolve()) if opts.data else None
    return {"init": opts.init, "one_epoch": opts.one_epoch or None, "max_steps": opts.max_steps,
            "sets": list(opts.sets), "data": data}  # fmt: skip


def restart_names(opts: SuiteOptions, names: list[str], chosen: list[str]) -> set[str]:
    """--restart a,b (with --resume): experiments to start fresh, their old run directories moved aside."""
    wanted = split_names(opts.restart)
    if not wanted:
        return set()
    if not opts.resume:
        raise DialsumError("--restart goes with --resume: it starts experiments of an earlier run of the suite "
                           "afresh (their old runs are moved aside)")
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise DialsumError(f"--restart: unknown experiment(s) {', '.join(unknown)}; the suite has {', '.join(names)}")
    left_out = [n for n in wanted if n not in chosen]
    if left_out:
        raise DialsumError(f"--restart {', '.join(left_out)}: left out of this run by --only/--skip; "
                           "drop it from one of them")
    return set(wanted)


def suite_args(opts: SuiteOptions, suite: SuiteFile, out: Path, given: dict[str, Any]) -> tuple[TrainArgs, list[str]]:
    """The options this suite run trains with (with --resume: the stored ones, updated) and the changes."""
    path = out / STATE_FILE
    if path.exists() and not opts.resume:
        raise DialsumError(
            f"{path}: a suite already ran in {out}; continue it with --resume, or choose another --out"
        )
    if not path.exists():
        return checks.check_train_args(resume_args(None, given)[0]), []
    stored = read_state(path)
    if stored.suite != suite.name:
        raise DialsumError(f"{path}: holds suite {stored.suite!r}, not {suite.name!r}; pass its suite file or another --out")
    args, changes = resume_args(stored.train_args, given)
    return checks.check_train_args(args), changes


def open_state(opts: SuiteOptions, suite: SuiteFile, out: Path, args: TrainArgs, changes: list[str]) -> SuiteState:
    """A new state, or the stored one merged with the suite file; option changes are recorded in it."""
    path = out / STATE_FILE
    stored = read_state(path) if path.exists() else None
    state = SuiteState(suite=suite.name, description=suite.description, suite_file=str(Path(opts.suite_file).resolve()), train_args=args,
                       records=merge_records(suite, stored.records if stored else []),
                       option_changes=stored.option_changes if stored else [],
                       moved_aside=stored.moved_aside if stored else [])
    for change in changes:
        state.option_changes.append(f"{now()} --resume {change}")
        for rec in state.records:
            if rec.state != "finished":
                rec.adaptations.append(f"suite: resumed with {change}")
    return state


def check_units(suite: SuiteFile, chosen: list[str], backend: Any) -> None:
    wanting = {n: [f"needs {suite.entry(n).gpus} {backend.kind} slot(s); this run has {backend.total} "
                   f"({backend.describe()})"] for n in chosen if suite.entry(n).gpus > backend.total}
    checks.refuse_problems(wanting, len(chosen), "cannot be placed")


def open_backend(opts: SuiteOptions) -> Any:
    """This machine's slots (--gpus, --slots), or a Ray cluster (--backend ray [--address])."""
    if opts.backend == "ray":
        if opts.gpus is not None or opts.slots is not None:
            raise DialsumError("--backend ray: Ray places the experiments itself; drop --gpus and --slots")
        return RayBackend(opts.address)
    if opts.backend != "local":
        raise DialsumError(f"--backend {opts.backend}: choose local or ray")
    if opts.address is not None:
        raise DialsumError("--address goes with --backend ray")
    return LocalBackend(plan_slots(opts.gpus, opts.slots, cpu_core_count()))

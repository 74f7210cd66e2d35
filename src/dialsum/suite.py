"""The experiment suite: a list of experiments run one after another, each in its own process.

    dialsum suite configs/suites/main5.yaml                          # the five seed experiments
    dialsum suite configs/suites/main5.yaml --init tiny --max-steps 20 --out runs/suites/demo
    dialsum suite configs/suites/main5.yaml --resume                 # after a crash, a kill or Ctrl-C
    dialsum suite configs/suites/main5.yaml --only kobart_baseline,kobart_high_lr
    scripts/run_main_5_experiments.sh -1                             # the seed's quick mode
    pytest tests/test_suite.py

For each selected experiment, in the suite file's order: wait until the GPU is free, run
`python -m dialsum.cli train CONFIG --run-dir <out>/<name>/run ...` in a fresh subprocess (its own
CUDA context) with its output in `<out>/<name>/suite.log`, watch its memory (`<out>/<name>/memory.csv`),
classify a failure from the exit code and the log tail, retry an out-of-memory failure once with half
the micro-batch and twice the accumulation, release memory, and rewrite the report. One failed
experiment never stops the others.

`<out>/suite_state.json` ({"suite": name, "records": [...]}, the report's input) is rewritten
atomically after every change. `--resume` skips finished experiments and continues a killed or
interrupted one from its last complete checkpoint, with the options the suite started with.
`<out>/suite.lock` (holding the pid) keeps a second suite off the same output directory.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dialsum import config, preflight, rundir
from dialsum.csvio import atomic_write_json
from dialsum.errors import DialsumError
from dialsum.paths import check_folder

STATE_FILE = "suite_state.json"
LOCK_FILE = "suite.lock"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
POLL_S = 0.5
REFRESH_S = 2.0
LOG_TAIL_BYTES = 64 * 1024
RESUMABLE_KINDS = ("killed", "timeout")


# ---------------------------------------------------------------- suite file schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SuiteSettings(_Strict):
    gpu_wait_max_used_mb: float = Field(
        2048, ge=0, description="Smart wait: start an experiment only when the GPU uses at most this (MB)"
    )
    gpu_wait_timeout_minutes: float = Field(
        30, ge=0, description="Give up waiting after this; the experiment fails"
    )
    gpu_wait_poll_seconds: float = Field(
        10, gt=0, description="Seconds between GPU memory checks while waiting"
    )
    monitor_interval_seconds: float = Field(2, gt=0, description="Seconds between memory samples")
    experiment_timeout_minutes: float | None = Field(
        None, gt=0, description="Stop an experiment running longer than this (null: no limit)"
    )
    oom_retry: bool = Field(True, description="Retry an out-of-memory failure once with half the micro-batch")
    stop_grace_seconds: float = Field(
        10, ge=0, description="After SIGINT, wait this long before SIGTERM/SIGKILL"
    )


class SuiteEntry(_Strict):
    name: str = Field(..., pattern=NAME_PATTERN, description="Short name; names <out>/<name>/")
    label: str = Field("", description="Human label for tables (default: the name)")
    config: str = Field(
        ..., description="Experiment YAML, relative to the suite file (or the working directory)"
    )
    expected_minutes: float = Field(..., ge=0, description="Expected wall time, shown against the actual")
    set: list[str] = Field(
        default_factory=list, description="Overrides for this experiment only: section.key=value"
    )


class SuiteFile(_Strict):
    name: str = Field(..., pattern=NAME_PATTERN, description="Suite name; default output runs/suites/<name>")
    description: str = Field("", description="One line: what the suite compares")
    settings: SuiteSettings = Field(default_factory=SuiteSettings)
    experiments: list[SuiteEntry] = Field(..., min_length=1, description="Experiments, in running order")

    @model_validator(mode="after")
    def _unique_names(self) -> SuiteFile:
        names = [e.name for e in self.experiments]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"experiments: duplicate name(s) {', '.join(dup)}; each names its own directory")
        return self

    def entry(self, name: str) -> SuiteEntry:
        return next(e for e in self.experiments if e.name == name)


SCHEMA_KEYS = {
    "": set(SuiteFile.model_fields),
    "settings": set(SuiteSettings.model_fields),
    "experiments": set(SuiteEntry.model_fields),
}


def load_suite(path: str | Path) -> SuiteFile:
    """Read and validate a suite YAML; every problem of the file at once, as one DialsumError."""
    path = Path(path)
    data = config.read_yaml_mapping(path, "suite", "a mapping with name, settings and experiments")
    try:
        suite = SuiteFile.model_validate(data)
    except ValidationError as err:
        problems = [config.describe_error(e, SCHEMA_KEYS, "suite file") for e in err.errors()]
        raise DialsumError(config.format_problems(path, problems)) from None
    for entry in suite.experiments:
        entry.config = resolve_config_path(entry.config, path)
    return suite


def resolve_config_path(value: str, suite_path: Path) -> str:
    """Relative to the suite file's folder; else relative to the working directory, where it exists."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    beside = Path(os.path.normpath(suite_path.parent / path))
    return str(path) if not beside.exists() and path.exists() else str(beside)


# ---------------------------------------------------------------- selection and up-front validation


def split_names(values: list[str] | None) -> list[str]:
    """`--only a,b --only c` -> [a, b, c]."""
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def select_names(names: list[str], only: list[str] | None, skip: list[str] | None) -> list[str]:
    """The experiments to run, in suite order; unknown names and an empty selection are errors."""
    only_n, skip_n = split_names(only), split_names(skip)
    unknown = [n for n in only_n + skip_n if n not in names]
    if unknown:
        raise DialsumError(
            f"--only/--skip: unknown experiment(s) {', '.join(unknown)}; the suite has {', '.join(names)}"
        )
    chosen = [n for n in names if (not only_n or n in only_n) and n not in skip_n]
    if not chosen:
        raise DialsumError("--only/--skip leave no experiment to run; check the names")
    return chosen


@dataclass
class TrainArgs:
    """What every experiment of the suite trains with; saved in the state file for --resume."""

    init: str | None = None  # None: each config's model.init
    one_epoch: bool = False
    max_steps: int | None = None
    sets: list[str] = field(default_factory=list)
    data: str | None = None

    def overrides(self, entry: SuiteEntry, extra: list[str] | None = None) -> list[str]:
        """--set values in precedence order: suite entry, command line, the suite's own adaptations."""
        data = [f"data.dir={self.data}"] if self.data else []
        return [*entry.set, *self.sets, *data, *(extra or [])]


def check_train_args(args: TrainArgs) -> TrainArgs:
    config.check_init(args.init)
    config.check_max_steps(args.max_steps, args.one_epoch)
    return args


def load_configs(suite: SuiteFile, chosen: list[str], args: TrainArgs) -> dict[str, config.ExperimentConfig]:
    """Load every chosen experiment's config as its run will; all bad configs reported at once."""
    loaded, problems = {}, {}
    for name in chosen:
        entry = suite.entry(name)
        try:
            loaded[name] = config.load(entry.config, args.overrides(entry))
        except DialsumError as err:
            problems[name] = [str(err)]
    refuse_problems(problems, len(chosen), "have an invalid config")
    return loaded


def check_experiments(suite: SuiteFile, chosen: list[str], args: TrainArgs) -> None:
    """What each chosen experiment's `train` would refuse (plan, transformers, data), all at once."""
    request = {
        "options": {"init": args.init, "one_epoch": args.one_epoch, "max_steps": args.max_steps},
        "experiments": [{"name": n, "config": suite.entry(n).config, "sets": args.overrides(suite.entry(n))}
                        for n in chosen],
    }
    refuse_problems(preflight.run_check(request), len(chosen), "cannot run")


def refuse_problems(problems: dict[str, list[str]], total: int, what: str) -> None:
    """One error listing every problem once, with the experiments it concerns (a shared data file once)."""
    if not problems:
        return
    by_text: dict[str, list[str]] = {}
    for name, items in problems.items():
        for item in items:
            by_text.setdefault(item.replace("\n", "\n    "), []).append(name)
    lines = [f"{', '.join(names)}: {text}" for text, names in by_text.items()]
    raise DialsumError(
        f"{len(problems)} of {total} experiment(s) {what}; nothing was run. Fix them first:\n"
        + "\n".join(f"  - {line}" for line in lines)
    )


# ---------------------------------------------------------------- failure classification


@dataclass
class Failure:
    kind: str  # oom | cuda | config | data | killed | timeout | other
    message: str
    lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


OOM_PATTERN = re.compile(r"OutOfMemoryError|out of memory|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)
CUDA_PATTERN = re.compile(
    r"CUDA error|cudaError|NCCL|device-side assert|CUBLAS_STATUS|CUDNN_STATUS|illegal memory access",
    re.IGNORECASE,
)
ERROR_LINE = re.compile(r"^error: ")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b")
PROGRESS_LINE = re.compile(r"\d+%\|")
SIGNAL_EXIT_CODES = {130: signal.SIGINT, 137: signal.SIGKILL, 143: signal.SIGTERM}
CONTEXT_LINES = 4
MAX_LINES = 16


def classify_failure(returncode: int, log_lines: list[str]) -> Failure | None:
    """Kind, message and telling log lines of a finished child; None when it succeeded."""
    if returncode == 0:
        return None
    lines = [ln.rstrip() for ln in log_lines if ln.strip() and not PROGRESS_LINE.search(ln)]
    if returncode < 0 or returncode in SIGNAL_EXIT_CODES:
        return killed_failure(returncode, lines)
    at = last_match(lines, ERROR_LINE)
    if returncode == 2 and at is not None:
        return user_error_failure(lines, at)
    for kind, pattern in (("oom", OOM_PATTERN), ("cuda", CUDA_PATTERN)):
        at = last_match(lines, pattern)
        if at is not None:
            return Failure(kind, lines[at].strip(), excerpt(lines, at))
    at = last_match(lines, EXCEPTION_LINE)
    if at is not None:
        return Failure("other", lines[at].strip(), excerpt(lines, at))
    return Failure("other", f"exited with code {returncode}", lines[-MAX_LINES:])


def killed_failure(returncode: int, lines: list[str]) -> Failure:
    sig = signal.Signals(-returncode) if returncode < 0 else SIGNAL_EXIT_CODES[returncode]
    why = " (the kernel's out-of-memory killer sends it too)" if sig == signal.SIGKILL else ""
    message = (
        f"killed by {sig.name} (exit code {returncode}){why}; its checkpoints are kept: --resume continues it"
    )
    return Failure("killed", message, lines[-CONTEXT_LINES:])


def user_error_failure(lines: list[str], at: int) -> Failure:
    """Exit 2 with `error: ...`: data when it names a .csv (and no .yaml), else config."""
    end = at + 1
    while end < len(lines) and lines[end][:1].isspace():
        end += 1
    text = " ".join(lines[at:end]).lower()
    kind = "data" if ".csv" in text and ".yaml" not in text and ".yml" not in text else "config"
    return Failure(kind, lines[at].removeprefix("error: ").strip(), excerpt(lines, at, end))


def timeout_failure(limit_minutes: float, lines: list[str]) -> Failure:
    message = (
        f"ran past the per-experiment time-out of {limit_minutes:g} min and was stopped; "
        "its checkpoints are kept: --resume continues it"
    )
    return Failure("timeout", message, [ln for ln in lines if ln.strip()][-CONTEXT_LINES:])


def last_match(lines: list[str], pattern: re.Pattern[str]) -> int | None:
    for i in range(len(lines) - 1, -1, -1):
        if pattern.search(lines[i].strip()):
            return i
    return None


def excerpt(lines: list[str], at: int, end: int | None = None) -> list[str]:
    """The error line(s) and a few lines before, at most MAX_LINES (the last ones)."""
    return lines[max(0, at - CONTEXT_LINES) : end or at + 1][-MAX_LINES:]


def read_log_tail(path: Path, start: int = 0, limit: int = LOG_TAIL_BYTES) -> list[str]:
    """Lines of `path` from byte `start` on (at most the last `limit` bytes)."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(start, size - limit))
            return fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []


# ---------------------------------------------------------------- out-of-memory retry


@dataclass(frozen=True)
class BatchRetry:
    micro_batch: int
    grad_accum: int
    text: str

    @property
    def overrides(self) -> list[str]:
        return [
            f"training.per_device_train_batch_size={self.micro_batch}",
            f"training.gradient_accumulation_steps={self.grad_accum}",
        ]


def halve_micro_batch(micro: int, accum: int) -> BatchRetry | None:
    """Half the micro-batch, twice the accumulation (effective batch kept when the micro-batch is even)."""
    if micro < 2:
        return None
    new_micro, new_accum = micro // 2, accum * 2
    before, after = micro * accum, new_micro * new_accum
    kept = f"effective {after} kept" if after == before else f"effective {before} -> {after}: odd micro-batch"
    text = (
        f"suite: out of memory at micro-batch {micro} x {accum}; "
        f"retried with {new_micro} x {new_accum} ({kept})"
    )
    return BatchRetry(new_micro, new_accum, text)


# ---------------------------------------------------------------- lock


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class SuiteLock:
    """`<out>/suite.lock` created with O_EXCL and holding the pid; a stale lock is taken over."""

    def __init__(self, path: Path, say: Callable[[str], Any] = print) -> None:
        self.path, self.say, self.held = path, say, False

    def owner(self) -> int | None:
        try:
            return int(self.path.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None

    def acquire(self) -> SuiteLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise DialsumError(f"{self.path}: cannot take the lock; remove the file if no suite is running")

    def refuse_if_held(self) -> None:
        """A live suite holds the lock: refused before any up-front work is done."""
        pid = self.owner()
        if pid is not None and pid_alive(pid):
            raise DialsumError(
                f"{self.path}: another suite (pid {pid}) is running on this output directory; "
                "wait for it, stop it, or choose another --out"
            )

    def _take_over_if_stale(self) -> None:
        self.refuse_if_held()
        pid = self.owner()
        shown = f"pid {pid} is not running" if pid is not None else "it names no pid"
        self.say(f"notice: taking over the stale lock {self.path} ({shown})")
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held and self.owner() == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> SuiteLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---------------------------------------------------------------- state


def new_record(entry: SuiteEntry) -> dict[str, Any]:
    """A pending record in the shape `dialsum.report` reads (plus the suite's own keys)."""
    return {
        "name": entry.name, "label": entry.label or entry.name, "config": entry.config, "state": "pending",
        "failure": None, "expected_minutes": entry.expected_minutes, "wall_seconds": 0.0, "attempts": 0,
        "run_dir": None, "memory_csv": None, "log": None, "adaptations": [], "overrides": [],
    }  # fmt: skip


def merge_records(suite: SuiteFile, old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records in suite order; earlier records (matched by name) keep their state, their file fields refresh."""
    by_name = {str(r.get("name")): r for r in old}
    records = []
    for entry in suite.experiments:
        rec = by_name.pop(entry.name, None) or new_record(entry)
        rec.update(
            label=entry.label or entry.name, config=entry.config, expected_minutes=entry.expected_minutes
        )
        records.append(rec)
    return records + list(by_name.values())


def next_action(rec: dict[str, Any], out: Path) -> str:
    """skip (finished), resume (from its last checkpoint) or fresh (start over in a cleared run dir).

    Only a run directory that holds a run can be resumed: one killed before it wrote its config
    starts fresh.
    """
    state, failure = rec.get("state"), rec.get("failure") or {}
    if state == "finished":
        return "skip"
    started = bool(rec.get("run_dir")) and rundir.is_run(out / str(rec["run_dir"]))
    if started and (state in ("running", "interrupted") or failure.get("kind") in RESUMABLE_KINDS):
        return "resume"
    return "fresh"


def resume_args(stored: dict[str, Any] | None, given: dict[str, Any]) -> tuple[TrainArgs, list[str]]:
    """The stored options, with those given again on --resume replacing them; and each change, in words.

    An option saved in the state never locks the user out: a corrected --data, --set or --init is
    taken and recorded. Experiments that continue from a checkpoint still refuse a change that
    reshapes their model (`train --resume` compares the settings).
    """
    base = TrainArgs(**stored) if stored else TrainArgs()
    changes = []
    for key, value in given.items():
        if value is None or value == []:
            continue
        if stored and value != getattr(base, key):
            changes.append(f"--{key.replace('_', '-')}: {getattr(base, key)!r} at the start, {value!r} now")
        setattr(base, key, value)
    # the two ways to shorten training exclude each other: the one given now replaces the stored one
    if given.get("max_steps") is not None:
        base.one_epoch = False
    elif given.get("one_epoch"):
        base.max_steps = None
    return base, changes


@dataclass
class SuiteState:
    path: Path
    suite: str
    suite_file: str
    args: TrainArgs
    records: list[dict[str, Any]]
    option_changes: list[str] = field(default_factory=list)

    def save(self) -> None:
        atomic_write_json(
            self.path,
            {
                "suite": self.suite, "suite_file": self.suite_file, "train_args": asdict(self.args),
                "option_changes": self.option_changes,
                "updated": datetime.now().astimezone().isoformat(timespec="seconds"), "records": self.records,
            },
        )  # fmt: skip


def read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DialsumError(
            f"{path}: unreadable suite state ({type(err).__name__}); use another --out"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("records"), list):
        raise DialsumError(f'{path}: expected an object with a "records" list; use another --out')
    return state


# ---------------------------------------------------------------- live progress


class TrainProgress:
    """Step, total steps and last loss of a running experiment, from its train_log.jsonl and output."""

    BAR = re.compile(r"train:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")

    def __init__(self, jsonl: Path, log: Path, log_start: int) -> None:
        self.jsonl, self.log, self.log_start = jsonl, log, log_start
        self.step: int | None = None
        self.max_steps: int | None = None
        self.loss: float | None = None
        self._pos = 0

    def poll(self) -> None:
        self._read_jsonl()
        for line in reversed(read_log_tail(self.log, self.log_start, 8192)):
            found = self.BAR.findall(line)
            if found:
                self.max_steps = int(found[-1][1])
                self.step = max(self.step or 0, int(found[-1][0]))
                break

    def _read_jsonl(self) -> None:
        try:
            with self.jsonl.open("rb") as fh:
                fh.seek(self._pos)
                chunk = fh.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._pos += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                self.step = int(entry.get("step") or self.step or 0)
                if isinstance(entry.get("loss"), (int, float)):
                    self.loss = float(entry["loss"])

    def steps_text(self) -> str:
        if self.step is None:
            return "-"
        return f"{self.step}/{self.max_steps}" if self.max_steps else str(self.step)


@dataclass
class Active:
    """The experiment now running, for the live table."""

    name: str
    started: float
    progress: TrainProgress
    monitor: Any = None


def memory_text(monitor: Any) -> str:
    if monitor is None or monitor.last is None:
        return "-"
    return f"{monitor.last.used_mb:.0f} MB {monitor.kind} (peak {monitor.peak_mb:.0f})"


def status_rows(records: list[dict[str, Any]], active: Active | None, waiting: str | None) -> list[list[str]]:
    rows = []
    for rec in records:
        expected = rec.get("expected_minutes") or 0
        seconds, state, steps, loss, memory = (
            rec.get("wall_seconds") or 0.0,
            str(rec.get("state")),
            "-",
            "-",
            "-",
        )
        if active is not None and rec["name"] == active.name:
            seconds += time.monotonic() - active.started
            steps, memory = active.progress.steps_text(), memory_text(active.monitor)
            loss = f"{active.progress.loss:.3f}" if active.progress.loss is not None else "-"
        elif rec["name"] == waiting:
            state = "waiting for GPU"
        kind = (rec.get("failure") or {}).get("kind")
        rows.append([
            rec["name"], f"{state} ({kind})" if kind else state,
            f"{seconds / 60:.1f} / {expected:.0f} min", steps, loss, memory,
        ])  # fmt: skip
    return rows


STATUS_HEADER = ["experiment", "state", "elapsed / expected", "step", "loss", "memory"]


class LineDisplay:
    """Without a terminal: one line per state change or notice."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def event(self, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        print(f"[suite {stamp}] {text}", file=self.stream or sys.stdout, flush=True)

    def update(self, rows: list[list[str]]) -> None:
        return None

    def close(self) -> None:
        return None


class LiveDisplay:
    """On a terminal: a rich table refreshed every couple of seconds, notices printed above it."""

    def __init__(self, title: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.title = title
        self.console = Console()
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def event(self, text: str) -> None:
        self.live.console.print(f"[dim]{datetime.now():%H:%M:%S}[/dim] {text}", markup=True, highlight=False)

    def update(self, rows: list[list[str]]) -> None:
        from rich.table import Table

        table = Table(title=self.title, title_justify="left")
        for column in STATUS_HEADER:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        self.live.update(table, refresh=True)

    def close(self) -> None:
        self.live.stop()


# ---------------------------------------------------------------- child processes


class SuiteInterrupted(Exception):
    """SIGINT or SIGTERM reached the suite: stop, save, report, exit 130."""


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


def start_child(cmd: list[str], log_file: Any) -> subprocess.Popen[bytes]:
    """The child in its own session (a terminal's Ctrl-C reaches only the suite, which stops it)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
        start_new_session=True, preexec_fn=PREEXEC,
    )  # fmt: skip


def stop_child(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGINT (lets it finish its log), then SIGTERM, then SIGKILL, to its whole process group."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def check_no_orphan(rec: dict[str, Any]) -> None:
    """Refuse to resume while the previous suite's training process for it still runs."""
    pid = rec.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or not pid_alive(pid):
        return
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return
    if "dialsum" in cmdline and str(rec.get("run_dir") or "") in cmdline:
        raise DialsumError(
            f"{rec['name']}: its training process from the previous suite (pid {pid}) is still running; "
            f"stop it (kill {pid}) before --resume"
        )


def clear_partial_checkpoints(run_dir: Path) -> list[str]:
    """Remove incomplete checkpoint-N folders (a kill mid-save; see `rundir.checkpoint_complete`)."""
    removed = []
    for ckpt in sorted((run_dir / "checkpoints").glob("checkpoint-*")):
        if ckpt.is_dir() and not rundir.checkpoint_complete(ckpt):
            shutil.rmtree(ckpt, ignore_errors=True)
            removed.append(ckpt.name)
    return removed


def train_command(
    entry: SuiteEntry, args: TrainArgs, run_dir: Path, extra: list[str], resume: bool
) -> list[str]:
    cmd = [sys.executable, "-m", "dialsum.cli", "train", entry.config, "--run-dir", str(run_dir)]
    if args.init:
        cmd += ["--init", args.init]
    if args.one_epoch:
        cmd.append("--one-epoch")
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    if resume:
        cmd.append("--resume")
    for item in args.overrides(entry, extra):
        cmd += ["--set", item]
    return cmd


# ---------------------------------------------------------------- the runner


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
    live: bool | None = None  # None: a live table when stdout is a terminal


class SuiteRunner:
    def __init__(self, suite: SuiteFile, state: SuiteState, out: Path, configs: dict[str, Any], display: Any):
        self.suite, self.state, self.out, self.configs, self.display = suite, state, out, configs, display
        self.settings = suite.settings
        self.stop_signal: str | None = None
        self.active: Active | None = None
        self.waiting: str | None = None
        self.said: set[str] = set()

    # -- the loop

    def run(self, chosen: list[str]) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for rec in self.state.records:
                if rec["name"] in chosen:
                    self._check_signal()
                    self.run_experiment(rec, self.suite.entry(rec["name"]))
            return 1 if any(r.get("state") == "failed" for r in self.state.records) else 0
        except SuiteInterrupted:
            self.display.event(f"interrupted by {self.stop_signal}: state saved; continue with --resume")
            return 130
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signal.Signals(signum).name

    def _check_signal(self) -> None:
        if self.stop_signal:
            raise SuiteInterrupted(self.stop_signal)

    def _sleep(self, seconds: float) -> None:
        """The smart wait's sleep: stops on a signal, keeps the table fresh."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._check_signal()
            self.refresh()
            time.sleep(min(POLL_S, max(0.0, end - time.monotonic())))

    def refresh(self) -> None:
        self.display.update(status_rows(self.state.records, self.active, self.waiting))

    def say_once(self, key: str, text: str) -> None:
        if key not in self.said:
            self.said.add(key)
            self.display.event(text)

    # -- one experiment

    def run_experiment(self, rec: dict[str, Any], entry: SuiteEntry) -> None:
        action = next_action(rec, self.out)
        if action == "skip":
            self.display.event(f"{rec['name']}: already finished; skipped (its run is kept)")
            return
        if action == "resume":
            check_no_orphan(rec)
        if not self._wait_for_gpu(rec):
            return
        try:
            failure = self._attempt(rec, entry, resume=action == "resume")
            retry = self._oom_retry(rec, failure)
            if retry is not None:
                failure = self._attempt(rec, entry, resume=False)
                if failure is not None and failure.kind == "oom":
                    rec.setdefault("adaptations", []).append(
                        "suite: the retry ran out of memory too; lower the batch in the config"
                    )
            self._finish(rec, failure)
        finally:
            self.active = None
            from dialsum.gpu import free_memory

            free_memory()
            self.write_report()

    def _wait_for_gpu(self, rec: dict[str, Any]) -> bool:
        from dialsum.gpu import wait_for_free_gpu

        s = self.settings
        self.waiting = rec["name"]
        try:
            result = wait_for_free_gpu(
                s.gpu_wait_max_used_mb, timeout_s=s.gpu_wait_timeout_minutes * 60, poll_s=s.gpu_wait_poll_seconds,
                log=lambda text: self.display.event(f"{rec['name']}: {text}"), sleep=self._sleep,
            )  # fmt: skip
        finally:
            self.waiting = None
        rec["wait"] = {"waited_s": result.waited_s, "message": result.message}
        if result.used_mb is None:
            self.say_once("no-gpu-wait", f"smart wait: {result.message}")
        elif result.ok and result.waited_s > 0:
            self.display.event(f"{rec['name']}: {result.message}")
        if not result.ok:
            self._finish(rec, Failure("timeout", f"smart wait: {result.message}", []))
            self.write_report()
        return result.ok

    def _oom_retry(self, rec: dict[str, Any], failure: Failure | None) -> BatchRetry | None:
        if failure is None or failure.kind != "oom" or not self.settings.oom_retry:
            return None
        cfg = self.configs[rec["name"]]
        micro, accum = cfg.training.per_device_train_batch_size, cfg.training.gradient_accumulation_steps
        for item in rec.get("overrides") or []:  # a retry already taken (e.g. before a --resume)
            parts, value = config.parse_override(item)
            micro = value if parts[-1] == "per_device_train_batch_size" else micro
            accum = value if parts[-1] == "gradient_accumulation_steps" else accum
        retry = halve_micro_batch(int(micro), int(accum))
        if retry is None:
            rec.setdefault("adaptations", []).append(
                f"suite: out of memory at micro-batch {micro}; nothing to halve"
            )
            return None
        rec.setdefault("adaptations", []).append(retry.text)
        rec["overrides"] = [*(rec.get("overrides") or []), *retry.overrides]
        self.display.event(f"{rec['name']}: {retry.text}")
        return retry

    def _attempt(self, rec: dict[str, Any], entry: SuiteEntry, *, resume: bool) -> Failure | None:
        exp_dir = self.out / rec["name"]
        run_dir, log_path, memory_csv = exp_dir / "run", exp_dir / "suite.log", exp_dir / "memory.csv"
        self._prepare_dirs(rec["name"], run_dir, memory_csv, resume)
        cmd = train_command(entry, self.state.args, run_dir.resolve(), rec.get("overrides") or [], resume)
        with log_path.open("ab") as log_file:
            log_file.write(f"\n=== {datetime.now():%Y-%m-%d %H:%M:%S} suite: {' '.join(cmd)}\n".encode())
            log_file.flush()
            start_offset = log_file.tell()
            proc = start_child(cmd, log_file)
        rec.pop("message", None)
        rec.update(
            state="running", failure=None, pid=proc.pid, attempts=int(rec.get("attempts") or 0) + 1,
            run_dir=f"{rec['name']}/run", memory_csv=f"{rec['name']}/memory.csv", log=f"{rec['name']}/suite.log",
            started_at=datetime.now().astimezone().isoformat(timespec="seconds"),
        )  # fmt: skip
        self.state.save()
        how = "resuming from its last checkpoint" if resume else "starting"
        self.display.event(f"{rec['name']}: {how} (attempt {rec['attempts']}), log {log_path}")
        started = time.monotonic()
        self.active = Active(
            rec["name"], started, TrainProgress(run_dir / "train_log.jsonl", log_path, start_offset)
        )
        try:
            returncode, stopped_by = self._watch(proc, rec, memory_csv)
        finally:
            rec["wall_seconds"] = round(float(rec.get("wall_seconds") or 0) + time.monotonic() - started, 2)
            rec.pop("pid", None)
        rec["exit_code"] = returncode
        if stopped_by == "signal":
            self._mark_interrupted(rec)
        tail = read_log_tail(log_path, start_offset)
        if stopped_by == "timeout":
            return timeout_failure(self.settings.experiment_timeout_minutes or 0, tail)
        return classify_failure(returncode, tail)

    def _prepare_dirs(self, name: str, run_dir: Path, memory_csv: Path, resume: bool) -> None:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        if resume:
            removed = clear_partial_checkpoints(run_dir)
            if removed:
                self.display.event(f"{name}: removed incomplete {', '.join(removed)} (killed while saving)")
            return
        if run_dir.exists():
            shutil.rmtree(run_dir)
        memory_csv.unlink(missing_ok=True)

    def _watch(
        self, proc: subprocess.Popen[bytes], rec: dict[str, Any], memory_csv: Path
    ) -> tuple[int, str | None]:
        """Wait for the child, refreshing the table; stop it on a signal or the per-experiment time-out."""
        monitor = self._start_monitor(rec["name"], memory_csv, proc.pid)
        assert self.active is not None
        self.active.monitor = monitor
        limit = self.settings.experiment_timeout_minutes
        deadline = self.active.started + limit * 60 if limit else None
        stopped_by, last_refresh = None, 0.0
        try:
            while True:
                try:
                    return proc.wait(timeout=POLL_S), stopped_by
                except subprocess.TimeoutExpired:
                    pass
                if self.stop_signal or (deadline is not None and time.monotonic() > deadline):
                    stopped_by = "signal" if self.stop_signal else "timeout"
                    self.display.event(f"{rec['name']}: stopping ({self.stop_signal or 'time-out'})")
                    return stop_child(proc, self.settings.stop_grace_seconds), stopped_by
                if time.monotonic() - last_refresh >= REFRESH_S:
                    last_refresh = time.monotonic()
                    self.active.progress.poll()
                    self.refresh()
        finally:
            if monitor is not None:
                monitor.stop()
                rec["memory"] = monitor.to_dict()
            self.active.progress.poll()

    def _start_monitor(self, name: str, memory_csv: Path, pid: int) -> Any:
        from dialsum.gpu import MemoryMonitor

        try:
            monitor = MemoryMonitor(
                memory_csv, interval_s=self.settings.monitor_interval_seconds, pid=pid,
                on_warn=lambda text: self.display.event(f"{name}: warning: {text}"),
            ).start()  # fmt: skip
        except DialsumError as err:  # the child exited before the monitor could attach
            self.display.event(f"{name}: memory monitor not started ({err})")
            return None
        if monitor.kind == "rss":
            self.say_once("rss", f"memory monitor: {monitor.note}")
        return monitor

    def _mark_interrupted(self, rec: dict[str, Any]) -> None:
        rec.update(state="interrupted", failure=None)
        rec["message"] = f"stopped by {self.stop_signal}; its checkpoints are kept: --resume continues it"
        self.state.save()
        self.write_report()
        raise SuiteInterrupted(self.stop_signal)

    def _finish(self, rec: dict[str, Any], failure: Failure | None) -> None:
        run_dir = self.out / rec["name"] / "run"
        if failure is None and not (run_dir / "metrics.json").is_file():
            failure = Failure("other", "exited with code 0 but wrote no metrics.json", [])
        rec.update(state="failed" if failure else "finished", failure=failure.to_dict() if failure else None)
        rec["finished_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
        self.state.save()
        self.active = None
        self.display.event(f"{rec['name']}: {outcome_text(rec, run_dir)}")
        self.refresh()

    def write_report(self) -> Path | None:
        from dialsum.report import write_report

        try:
            paths = write_report(
                self.out, self.state.records, title=f"Experiment comparison: {self.suite.name}"
            )
        except Exception as err:  # a report problem must never stop the experiments
            self.display.event(f"warning: report not written ({type(err).__name__}: {err})")
            return None
        return paths["report_md"]


def read_metrics(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def dev_final(metrics: dict[str, Any]) -> float | None:
    value = ((metrics.get("dev") or {}).get("morpheme") or {}).get("final")
    return float(value) if isinstance(value, (int, float)) else None


def outcome_text(rec: dict[str, Any], run_dir: Path) -> str:
    minutes = f"{(rec.get('wall_seconds') or 0) / 60:.1f} min (expected {rec.get('expected_minutes') or 0:g})"
    failure = rec.get("failure")
    if failure:
        return f"FAILED ({failure['kind']}) after {minutes}: {failure['message']}"
    m = read_metrics(run_dir)
    final = dev_final(m)
    score = f", dev final {final:.2f}" if final is not None else ""
    peak = (rec.get("memory") or {}).get("peak_mb")
    memory = f", peak {peak:.0f} MB {(rec.get('memory') or {}).get('kind')}" if peak else ""
    return f"finished in {minutes}, {m.get('steps', '?')} steps{score}{memory}"


def results_table(records: list[dict[str, Any]], out: Path) -> str:
    """The compact end-of-suite table."""
    header = ["experiment", "state", "minutes / expected", "dev final", "attempts"]
    rows = []
    for rec in records:
        final = dev_final(read_metrics(out / rec["name"] / "run")) if rec.get("state") == "finished" else None
        kind = (rec.get("failure") or {}).get("kind")
        rows.append([
            rec["name"], f"{rec.get('state')} ({kind})" if kind else str(rec.get("state")),
            f"{(rec.get('wall_seconds') or 0) / 60:.1f} / {rec.get('expected_minutes') or 0:g}",
            f"{final:.2f}" if final is not None else "-", str(rec.get("attempts") or 0),
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    )


# ---------------------------------------------------------------- entry point


def suite_args(opts: SuiteOptions, suite: SuiteFile, out: Path, given: dict[str, Any]) -> tuple[TrainArgs, list[str]]:
    """The options this suite run trains with (with --resume: the stored ones, updated) and the changes."""
    path = out / STATE_FILE
    if path.exists() and not opts.resume:
        raise DialsumError(
            f"{path}: a suite already ran in {out}; continue it with --resume, or choose another --out"
        )
    if not path.exists():
        return check_train_args(resume_args(None, given)[0]), []
    stored = read_state(path)
    if stored.get("suite") not in (None, suite.name):
        raise DialsumError(
            f"{path}: holds suite {stored.get('suite')!r}, not {suite.name!r}; pass its suite file or another --out"
        )
    args, changes = resume_args(stored.get("train_args"), given)
    return check_train_args(args), changes


def open_state(opts: SuiteOptions, suite: SuiteFile, out: Path, args: TrainArgs, changes: list[str]) -> SuiteState:
    """A new state, or the stored one merged with the suite file; option changes are recorded in it."""
    path = out / STATE_FILE
    suite_file = str(Path(opts.suite_file).resolve())
    stored = read_state(path) if path.exists() else {}
    state = SuiteState(path, suite.name, suite_file, args, merge_records(suite, stored.get("records") or []),
                       list(stored.get("option_changes") or []))
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    for change in changes:
        state.option_changes.append(f"{stamp} --resume {change}")
        for rec in state.records:
            if rec.get("state") != "finished":
                rec.setdefault("adaptations", []).append(f"suite: resumed with {change}")
    return state


def given_args(opts: SuiteOptions) -> dict[str, Any]:
    data = str(Path(opts.data).resolve()) if opts.data else None
    return {"init": opts.init, "one_epoch": opts.one_epoch or None, "max_steps": opts.max_steps,
            "sets": list(opts.sets), "data": data}  # fmt: skip


def run_suite(opts: SuiteOptions) -> int:
    """Validate everything up front, take the lock, run the selected experiments; the exit code."""
    suite = load_suite(opts.suite_file)
    chosen = select_names([e.name for e in suite.experiments], opts.only, opts.skip)
    given = given_args(opts)
    check_train_args(resume_args(None, given)[0])  # bad flags fail before anything is written
    out = check_folder(opts.out or Path("runs") / "suites" / suite.name, "--out")
    SuiteLock(out / LOCK_FILE).refuse_if_held()
    args, changes = suite_args(opts, suite, out, given)
    configs = load_configs(suite, chosen, args)
    check_experiments(suite, chosen, args)  # nothing is written before every experiment could run
    live = sys.stdout.isatty() if opts.live is None else opts.live
    display: Any = LineDisplay()
    out.mkdir(parents=True, exist_ok=True)
    with SuiteLock(out / LOCK_FILE, say=display.event):
        state = open_state(opts, suite, out, args, changes)
        for change in changes:
            display.event(f"--resume {change}: taken, and recorded in {STATE_FILE}")
        for rec in state.records:
            if rec["name"] not in chosen and rec.get("state") == "pending":
                rec["state"] = "skipped"
        state.save()
        display.event(f"suite {suite.name}: {len(chosen)} experiment(s) -> {out}")
        if live:
            display = LiveDisplay(f"suite {suite.name} ({out})")
        runner = SuiteRunner(suite, state, out, configs, display)
        try:
            code = runner.run(chosen)
        finally:
            report = runner.write_report()
            display.close()
        print(results_table(state.records, out))
        if report is not None:
            print(f"report: {report}")
        return code

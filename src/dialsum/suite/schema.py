"""The suite file: its schema, where its config paths point, and which experiments a run selects.

    dialsum suite configs/suites/main5.yaml --only kobart_baseline,kobart_high_lr --skip mt5_xlsum_qlora
    pytest tests/test_suite.py -k schema
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dialsum import config
from dialsum.ensemble import pool_problem
from dialsum.errors import DialsumError
from dialsum.sweep.study import PRUNERS

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SuiteSettings(_Strict):
    """How the suite runs its experiments: the smart wait, the memory monitor, time-outs, the retry."""

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


class SuiteTune(_Strict):
    """An entry's generation tuning once it trained (`dialsum tune`)."""

    trials: int = Field(..., ge=1, description="Generation tuning trials after training (dialsum tune)")
    dev_rows: int | None = Field(None, ge=1, description="Dev rows to search on (default: half of dev; the rest score the choice)")


class SuiteSweep(_Strict):
    """An entry's training sweep (`dialsum sweep`) on its slot, then the training of the best settings.

    The sweep writes `<out>/<name>/sweep/`; the entry then trains its best.yaml into `<out>/<name>/run/`, as any
    entry trains its config."""

    trials: int = Field(..., ge=1, description="Sweep trials on the entry's slot, one at a time (trial 0 the config's "
                        "own settings); then the entry trains the sweep's best.yaml")
    dev_rows: int | None = Field(None, ge=1, description="Dev rows the trials are scored on (default: half of dev; the "
                                 "rest score the best trial against trial 0)")
    pruner: Literal[PRUNERS] = Field("median", description="Stops weak trials early: median, hyperband or none")  # type: ignore[valid-type]


class SuiteEnsemble(_Strict):
    """An MBR ensemble of finished experiments, built after the last one (`dialsum ensemble`)."""

    runs: list[str] = Field(..., min_length=2, description="Experiments (names) to ensemble once they finish")
    candidates: int = Field(1, ge=1, description="Candidates per run: 1 its own output, K its K best beams")
    weighted: bool = Field(False, description="Weight each run by its dev score")
    tuned: bool = Field(False, description="Use each run's tuned outputs (its entry needs tune)")


class SuiteEntry(_Strict):
    """One experiment of the suite (an item of `experiments`)."""

    name: str = Field(..., pattern=NAME_PATTERN, description="Short name; names <out>/<name>/")
    label: str = Field("", description="Human label for tables (default: the name)")
    config: str = Field(
        ..., description="Experiment YAML, relative to the suite file (or the working directory)"
    )
    expected_minutes: float = Field(..., ge=0, description="Expected wall time, shown against the actual")
    set: list[str] = Field(
        default_factory=list, description="Overrides for this experiment only: section.key=value"
    )
    gpus: int = Field(
        1, ge=1, description="GPUs (CPU processes on a CPU-only run) for this experiment; more than 1 trains DDP"
    )
    tune: SuiteTune | None = Field(None, description="Tune its generation once trained: {trials: N}")
    sweep: SuiteSweep | None = Field(None, description="Sweep its training settings first, then train the best: "
                                     "{trials: N}")

    @model_validator(mode="after")
    def _sweep_on_one_slot(self) -> SuiteEntry:
        if self.sweep is not None and self.gpus > 1:
            raise ValueError(f"gpus: {self.gpus} with sweep: a sweep entry runs its trials one at a time on one slot "
                             "and trains its best there; drop gpus, or the sweep")
        return self


class SuiteFile(_Strict):
    name: str = Field(..., pattern=NAME_PATTERN, description="Suite name; default output runs/suites/<name>")
    description: str = Field("", description="One line: what the suite compares")
    settings: SuiteSettings = Field(default_factory=SuiteSettings, description="How the suite runs its experiments")
    experiments: list[SuiteEntry] = Field(..., min_length=1, description="Experiments, in running order")
    ensemble: SuiteEnsemble | None = Field(None, description="An MBR ensemble of finished experiments, at the end")

    @model_validator(mode="after")
    def _unique_names(self) -> SuiteFile:
        names = [e.name for e in self.experiments]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"experiments: duplicate name(s) {', '.join(dup)}; each names its own directory")
        if self.ensemble:
            unknown = [n for n in self.ensemble.runs if n not in names]
            if unknown:
                raise ValueError(f"ensemble.runs: unknown experiment(s) {', '.join(unknown)}; the suite has "
                                 f"{', '.join(names)}")
            untuned = [n for n in self.ensemble.runs if self.ensemble.tuned and self.entry(n).tune is None]
            if untuned:
                raise ValueError(f"ensemble.tuned: {', '.join(untuned)} has no tune; add tune: {{trials: N}} to it")
            problem = pool_problem(len(self.ensemble.runs), self.ensemble.candidates, "ensemble.candidates")
            if problem:
                raise ValueError(problem)
        return self

    def entry(self, name: str) -> SuiteEntry:
        return next(e for e in self.experiments if e.name == name)


SCHEMA_KEYS = {
    "": set(SuiteFile.model_fields),
    "settings": set(SuiteSettings.model_fields),
    "experiments": set(SuiteEntry.model_fields),
    "ensemble": set(SuiteEnsemble.model_fields),
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

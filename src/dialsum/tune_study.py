"""Generation tuning's study: the scorer of a loaded run, the SQLite study and its writes, the run's own trial.

    dialsum tune runs/kobart_baseline/<time> --trials 20
    pytest tests/test_tune.py -k "study or ctrl_c or locked"

The study (TPE, seeded by the run's seed) lives in `RUN_DIR/tune/study.db` (SQLite): finished trials
survive Ctrl-C and a later `dialsum tune` adds to them. The run's own settings are queued first, and again
by each call until one of their trials completes. A trial is written to the study with Ctrl-C held back,
so a Ctrl-C never lands inside Optuna's bookkeeping; it stops the command (exit 130) once the write is
done. A continued study must search the same dev rows and space, or its trials would not compare.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from dialsum import generation, prompt
from dialsum.errors import DialsumError
from dialsum.metrics import score
from dialsum.sections import ExperimentConfig
from dialsum.tune_space import apply

STUDY_NAME = "generation"


@dataclass
class Scorer:
    """Generates and scores dev summaries of one loaded run under any settings."""

    cfg: ExperimentConfig
    tokenizer: Any
    model: Any
    family: str
    dev: Any

    def summaries(self, cfg: ExperimentConfig, dialogues: list[str]) -> list[str]:
        encoder = prompt.make_encoder(self.tokenizer, self.family, cfg)
        strip = generation.decoder_tokens_to_strip(self.tokenizer)
        return generation.generate(self.model, self.tokenizer, encoder.inputs(dialogues), cfg.generation, strip)

    def score(self, params: dict[str, Any], rows: list[int]) -> float:
        return self.evaluate(params, rows)[0]

    def evaluate(self, params: dict[str, Any], rows: list[int]) -> tuple[float, list[str]]:
        """The dev score of these settings on these rows, and the summaries that got it."""
        frame = self.dev.iloc[rows]
        preds = self.summaries(apply(self.cfg, params), list(frame["dialogue"]))
        return float(score(preds, [[s] for s in frame["summary"]], tokenize="morpheme").final), preds


def open_study(db: Path) -> Any:
    import optuna  # optuna takes a second to import: only where a study is opened

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its "trial failed" warning repeats a Ctrl-C
    # A Ctrl-C inside a database call leaves SQLAlchemy a connection to roll back when it is collected, and it
    # logs that with a traceback; SQLite has already rolled the unfinished transaction back, so it says nothing.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    return optuna.create_study(storage=f"sqlite:///{db}", study_name=STUDY_NAME, direction="maximize",
                               load_if_exists=True)


@contextlib.contextmanager
def study_errors(db: Path) -> Iterator[None]:
    """The study file's problems as one line each: not a database, a study Optuna cannot read, locked by
    another program. A lock is waited for as long as SQLite's busy timeout (5 s): `--jobs` workers write the
    same file in turns, each briefly; a program that keeps it locked longer is named, not waited for."""
    import sqlalchemy.exc  # optuna's storage: imported with it, only here

    try:
        yield
    except sqlalchemy.exc.DatabaseError as err:  # OperationalError, "database is locked", is one of them
        if "locked" in str(err.orig):
            raise DialsumError(f"{db}: locked by {_holders(db)}, not by a dialsum tune; close the study there "
                               "(or wait for it), then run dialsum tune again") from None
        raise DialsumError(f"{db}: {err.orig}; move it aside, and dialsum tune starts a new study") from None


def _holders(path: Path) -> str:
    """The other processes that have `path` open (pid and name), or "another program" when none can be seen."""
    target, found = path.resolve(), []
    for proc in psutil.process_iter(["pid", "name"]):
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if any(Path(f.path) == target for f in proc.open_files()):
                found.append(f"pid {proc.pid} ({proc.info['name']})")
    return ", ".join(found) or "another program"


def check_same_split(study: Any, search: list[int], space: dict[str, list[Any]]) -> None:
    """A continued study must score on the same rows and space, or its trials do not compare."""
    stored = study.user_attrs.get("subset")
    if stored is None:
        study.set_user_attr("subset", search)
        study.set_user_attr("space", {k: [str(v) for v in vals] for k, vals in space.items()})
    elif stored != search:
        raise DialsumError(f"--dev-rows: tune/study.db scored its trials on {len(stored)} other dev rows, this run "
                           f"would search on {len(search)}; give the --dev-rows it was started with, or move "
                           "tune/study.db aside to start over")
    elif study.user_attrs.get("space") != {k: [str(v) for v in vals] for k, vals in space.items()}:
        raise DialsumError("tune: the config's tune section changed since tune/study.db started; restore it, or "
                           "move tune/study.db aside to start over")


def queue_own(study: Any, params: dict[str, Any]) -> None:
    """Queue the run's own settings until one of their trials completes: one that was interrupted (failed,
    or left running by a killed process) is queued again."""
    from optuna.trial import TrialState  # optuna: see open_study

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING)):
        if (t.params if t.state == TrialState.COMPLETE else t.system_attrs.get("fixed_params")) == params:
            return
    study.enqueue_trial(params)


def own_trial(study: Any, params: dict[str, Any]) -> Any | None:
    """The completed trial of the run's own settings."""
    from optuna.trial import TrialState  # optuna: see open_study

    return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.params == params),
                None)


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """Ctrl-C waits until the block is done, then stops the command as usual (KeyboardInterrupt). Around the
    study's writes: a KeyboardInterrupt inside them leaves Optuna's bookkeeping half done (a trial neither
    failed nor complete, or Optuna's own UnboundLocalError). Signal handlers belong to the main thread; in
    any other thread the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def run_trial(study: Any, objective: Callable[[Any], float]) -> Any:
    """One trial through Optuna's ask-and-tell interface, each write with Ctrl-C held back; a trial stopped by
    Ctrl-C or an error is stored as failed (the run's own settings are then queued again: `queue_own`)."""
    from optuna.trial import TrialState  # optuna: see open_study

    trial = None
    try:
        with sigint_held():
            trial = study.ask()
        value = objective(trial)
    except BaseException:
        if trial is not None:
            with sigint_held(), contextlib.suppress(Exception):  # the first error is the one to show
                study.tell(trial, state=TrialState.FAIL)
        raise
    with sigint_held():
        study.tell(trial, value)
    return trial
